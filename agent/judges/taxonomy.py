"""The category taxonomy latents are sorted into: `prompts/taxonomy.yaml` or a user file, same shape.

A label whose category is not a taxonomy name is invalid (`Taxonomy.check`); subcategories are
suggestions shown to the judge, not a closed set.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from latentdiff.errors import ConfigError
from latentdiff.prompts import read_prompt
from latentdiff.records import LatentLabel


def normalize_category(name: str) -> str:
    """Canonical spelling of a category name: 'Self Reference', 'instruction-following' -> snake_case."""
    return "_".join(re.split(r"[\s\-_]+", name.strip().lower())).strip("_")


class Category(BaseModel):
    """One category: a snake_case name, what it covers, and suggested subcategories."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=40, description="Category id, e.g. 'safety'.")
    description: str = Field(min_length=1, description="What text in this category looks like.")
    subcategories: list[str] = Field(default_factory=list, description="Suggested subcategories.")
    prototypes: list[str] = Field(
        default_factory=list, description="Short sentences typical of the concept (the embedding judge's prototypes)."
    )

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not all(c.isalnum() or c == "_" for c in v):
            raise ValueError(f"category name must be letters/digits/_ only, got {v!r}")
        return v


class Taxonomy(BaseModel):
    """The ordered list of categories a judge may choose from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(default=1, description="Schema version of the taxonomy file.")
    categories: list[Category] = Field(min_length=1, description="The categories, in display order.")

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"category names must be unique, got {names}")
        return self

    @property
    def names(self) -> list[str]:
        """Category names in order."""
        return [c.name for c in self.categories]

    def resolve(self, name: str) -> str | None:
        """The taxonomy's own spelling of `name` (case, spaces and hyphens ignored), None if absent."""
        if name in self.names:
            return name
        want = normalize_category(name)
        return next((n for n in self.names if normalize_category(n) == want), None)

    def get(self, name: str) -> Category:
        """The category called `name`, in any common spelling (KeyError if absent)."""
        canonical = self.resolve(name)
        for c in self.categories:
            if c.name == canonical:
                return c
        raise KeyError(name)

    def check(self, label: LatentLabel) -> LatentLabel:
        """`label` with its category in the taxonomy's spelling; ValueError if it is not a category."""
        canonical = self.resolve(label.category)
        if canonical is None:
            raise ValueError(f"category {label.category!r} not in taxonomy {self.names}")
        return label if canonical == label.category else label.model_copy(update={"category": canonical})


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load a taxonomy from `path`, or the bundled `prompts/taxonomy.yaml` when None."""
    return _bundled() if path is None else _load(path)


@cache
def _bundled() -> Taxonomy:
    return _load(None)


def _load(path: str | Path | None) -> Taxonomy:
    where = str(path) if path is not None else "bundled taxonomy.yaml"
    try:
        text = Path(path).read_text(encoding="utf-8") if path is not None else read_prompt("taxonomy.yaml")
    except OSError as err:
        raise ConfigError(f"{where}: cannot read taxonomy: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: invalid YAML: {str(err).splitlines()[0]}") from None
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "<root>"
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from None
