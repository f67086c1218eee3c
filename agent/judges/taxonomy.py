"""The category taxonomy latents are sorted into: `prompts/taxonomy.yaml` or a user file, same shape.

A label whose category is not a taxonomy name is invalid (`Taxonomy.check`); subcategories are
suggestions shown to the judge, not a closed set.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from latentdiff.errors import ConfigError
from latentdiff.prompts import read_prompt
from latentdiff.records import LatentLabel


class Category(BaseModel):
    """One category: a snake_case name, what it covers, and suggested subcategories."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=40, description="Category id, e.g. 'safety'.")
    description: str = Field(min_length=1, description="What text in this category looks like.")
    subcategories: list[str] = Field(default_factory=list, description="Suggested subcategories.")

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

    def get(self, name: str) -> Category:
        """The category called `name` (KeyError if absent)."""
        for c in self.categories:
            if c.name == name:
                return c
        raise KeyError(name)

    def check(self, label: LatentLabel) -> LatentLabel:
        """Return `label` if its category is in the taxonomy, else raise ValueError."""
        if label.category not in self.names:
            raise ValueError(f"category {label.category!r} not in taxonomy {self.names}")
        return label


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
