"""The CPU thread governor (core/threads.py): it picks the faster count, follows a load change, probes
rarely on a steady machine, and the count it picks cannot change a training run's weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from latentdiff.config import CrosscoderConfig
from latentdiff.core.crosscoder import CrossCoderSpec
from latentdiff.core.threads import ThreadGovernor
from latentdiff.core.train import Trainer


class Machine:
    """A loop whose step time depends on the thread count and on a load switched by the test."""

    def __init__(self) -> None:
        self.threads = 2
        self.loaded = False
        self.counts: list[int] = []

    def set(self, n: int) -> None:
        self.threads = n

    def step_time(self) -> float:
        if self.loaded:  # two threads wait for each other beside a busy process
            return {1: 0.068, 2: 0.130}[self.threads]
        return {1: 0.068, 2: 0.040}[self.threads]

    def run(self, gov: ThreadGovernor, steps: int) -> None:
        for _ in range(steps):
            gov.before()
            self.counts.append(self.threads)
            gov.after(self.step_time())


def test_governor_follows_the_load_and_probes_rarely_when_steady() -> None:
    m = Machine()
    gov = ThreadGovernor(2, set_threads=m.set)
    m.run(gov, 2000)  # idle: 2 threads stay, probes of 1 thread back off
    assert gov.current == 2 and m.threads == 2 and not gov.switches
    assert m.counts.count(1) <= 40, f"{m.counts.count(1)=} steps spent probing on a steady idle machine"
    m.loaded = True
    m.counts.clear()
    m.run(gov, 1000)  # a busy process starts: within the longest wait it moves to 1 thread
    assert gov.current == 1 and m.threads == 1
    assert m.counts[-200:].count(1) >= 190  # now and then a probe of 2
    m.loaded = False
    m.run(gov, 1000)  # and back
    assert gov.current == 2 and m.counts[-200:].count(2) >= 190
    assert [(a, b) for a, b, *_ in gov.switches] == [(2, 1), (1, 2)]


def test_governor_with_one_thread_does_nothing() -> None:
    calls: list[int] = []
    gov = ThreadGovernor(1, set_threads=calls.append)
    for _ in range(100):
        gov.before()
        gov.after(0.01)
    assert not gov.active and calls == [] and gov.current == 1
    with pytest.raises(ValueError, match="max_threads=0"):
        ThreadGovernor(0)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPU threads")
def test_training_weights_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """Shapes where every large kernel runs in parallel (torch splits work above 32k elements)."""
    M, D, F, k, B = 2, 64, 2048, 4, 512
    cfg = CrosscoderConfig(dict_size=F, k=k, batch_size=B, steps=100, warmup_steps=2, dead_tokens=1000)
    spec = CrossCoderSpec(arch="batchtopk", n_models=M, d_model=D, dict_size=F, k=k, model_names=["a", "b"])
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(400, M, D, generator=g)  # [concepts, M, D]
    batches = [torch.einsum("nf,fmd->nmd", torch.rand(B, 400, generator=g) * (torch.rand(B, 400, generator=g) < 0.02),
                            basis) for _ in range(4)]  # [B, M, D]
    before = torch.get_num_threads()
    weights = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            tr = Trainer(cfg, spec, torch.zeros(M, D), torch.ones(M), tmp_path / f"t{n}", torch.device("cpu"))
            tr.governor = None
            for i in range(12):
                tr.train_step(batches[i % 4], metrics=i % 5 == 0)
            assert int((tr.since_fired >= cfg.dead_tokens).sum()) > 0  # AuxK ran
            weights.append(tr.cc.state_dict())
    finally:
        torch.set_num_threads(before)
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), f"{name} differs between 1 and 2 threads"


def test_fit_restores_the_thread_count(tmp_path: Path) -> None:
    M, D, F, B = 2, 8, 32, 16
    cfg = CrosscoderConfig(dict_size=F, k=4, batch_size=B, steps=6, warmup_steps=1, cpu_threads=1,
                           checkpoint_every=100)
    spec = CrossCoderSpec(arch="batchtopk", n_models=M, d_model=D, dict_size=F, k=4, model_names=["a", "b"])
    tr = Trainer(cfg, spec, torch.zeros(M, D), torch.ones(M), tmp_path / "cc", torch.device("cpu"))
    assert tr.governor is None  # a fixed count: no governor
    before = torch.get_num_threads()
    seen: list[int] = []
    step = tr.train_step

    def spy(raw: torch.Tensor, metrics: bool = True) -> dict[str, float]:
        seen.append(torch.get_num_threads())
        return step(raw, metrics)

    tr.train_step = spy  # type: ignore[method-assign]
    tr.fit(lambda start: iter([torch.randn(B, M, D) for _ in range(10)]), show=False)
    assert seen == [1] * 6 and torch.get_num_threads() == before
    auto = Trainer(cfg.model_copy(update={"cpu_threads": None}), spec, torch.zeros(M, D), torch.ones(M),
                   tmp_path / "auto", torch.device("cpu"))
    assert auto.governor is not None and auto.governor.max_threads == before
