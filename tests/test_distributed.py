"""Two gloo workers on CPU give what one process gives on the concatenated batch.

The workers run in spawned processes (torch.multiprocessing, gloo, file:// rendezvous) and write
their results with torch.save; the test compares them with a single-process computation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drawmatch.training import distributed
from drawmatch.training.losses import distributed_step_loss, make_loss
from drawmatch.training.mining import GalleryBank, positive_mask

WORLD = 2
TIMEOUT_S = 120.0
IN_DIM, OUT_DIM = 5, 4

# A fixed batch: 5 anchors (drawings) and 10 refs (positives + mined negatives, gallery labels).
# Rank 0 gets anchors 0-2 and refs 0-5, rank 1 anchors 3-4 and refs 6-9 (uneven on purpose).
ANCHOR_X = torch.randn(5, IN_DIM, generator=torch.Generator().manual_seed(1))
REF_X = torch.randn(10, IN_DIM, generator=torch.Generator().manual_seed(2))
POSITIVES: list[set[int]] = [{3}, {7, 8}, {1}, {8}, {0}]
# refs of rank 0: positives of its anchors then their mined negatives; label 8 (anchor 1's positive)
# also comes as anchor 4's mined negative on rank 1, and 1 (anchor 2's) as anchor 3's.
REF_LABELS = torch.tensor([3, 7, 1, 5, 2, 6, 8, 0, 1, 8])
SPLIT_ANCHORS = [(0, 3), (3, 5)]
SPLIT_REFS = [(0, 6), (6, 10)]

BANK_SIZE, BANK_DIM, BANK_BATCH = 11, 3, 2
BANK_TABLE = torch.randn(BANK_SIZE, BANK_DIM, generator=torch.Generator().manual_seed(3))


def _linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(IN_DIM, OUT_DIM)


def _step(model: torch.nn.Module, anchors_x, positives, refs_x, ref_labels, mode: str):
    """One training step: embed anchors and refs with `model`, loss, backward."""
    emb = model(torch.cat([anchors_x, refs_x]))
    anchors, refs = emb[: len(anchors_x)], emb[len(anchors_x) :]
    loss, info = distributed_step_loss(
        make_loss(mode, 0.7), anchors, positives, refs, ref_labels, mode
    )
    loss.backward()
    return loss, info


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        out: dict[str, Any] = {"world": distributed.world()}
        # all_gather_with_grad: different sizes per rank, gradient only into the local slice
        x = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)
        g = distributed.all_gather_with_grad(x)
        weights = torch.arange(g.numel(), dtype=torch.float32).reshape(g.shape)
        (g * weights).sum().backward()
        out["gathered"] = g.detach()
        out["x_grad"] = x.grad
        out["no_grad"] = distributed.all_gather_no_grad(torch.tensor([rank] * (2 - rank)))
        out["bools"] = distributed.all_gather_no_grad(torch.tensor([rank == 0, True]))

        a0, a1 = SPLIT_ANCHORS[rank]
        r0, r1 = SPLIT_REFS[rank]
        for mode in ("triplet", "contrastive"):
            model = torch.nn.parallel.DistributedDataParallel(_linear())
            loss, info = _step(
                model, ANCHOR_X[a0:a1], POSITIVES[a0:a1], REF_X[r0:r1], REF_LABELS[r0:r1], mode
            )
            out[mode] = {
                "loss": loss.detach(),
                "info": info,
                "weight_grad": model.module.weight.grad.clone(),
                "bias_grad": model.module.bias.grad.clone(),
            }

        calls: list[list[int]] = []

        def embed(idx: torch.Tensor) -> torch.Tensor:
            calls.append(idx.tolist())
            return BANK_TABLE[idx] + 1.0

        bank = GalleryBank(BANK_SIZE, BANK_DIM)
        bank.refresh(embed, batch_size=BANK_BATCH)
        out["bank"] = bank.embeddings
        out["bank_calls"] = calls
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
        # No rank tears its connections down while the other may still be reading from them.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path) -> list[dict[str, Any]]:
    """Run `_worker` on WORLD processes; fail (and kill them) after TIMEOUT_S."""
    ctx = mp.start_processes(
        _worker,
        args=(str(tmp_path / "rdzv"), str(tmp_path)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"gloo workers did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _spawn(tmp_path_factory.mktemp("gloo"))


def test_gather_helpers(results: list[dict[str, Any]]) -> None:
    expected = torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    weights = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    for rank, out in enumerate(results):
        assert out["world"] == (rank, WORLD)
        assert torch.equal(out["gathered"], expected)  # rank order, uneven sizes
        assert torch.equal(out["no_grad"], torch.tensor([0, 0, 1]))
        assert out["bools"].tolist() == [True, True, False, True]
    # each rank's leaf gets the gradient of its own rows only
    assert torch.equal(results[0]["x_grad"], weights[:1])
    assert torch.equal(results[1]["x_grad"], weights[1:])
    assert distributed.world() == (0, 1)
    x = torch.ones(2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x


@pytest.mark.parametrize("mode", ["triplet", "contrastive"])
def test_two_workers_equal_one_process(results: list[dict[str, Any]], mode: str) -> None:
    model = _linear()
    loss, info = _step(model, ANCHOR_X, POSITIVES, REF_X, REF_LABELS, mode)
    assert info.world_size == 1
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
    for rank, out in enumerate(results):
        got = out[mode]
        ginfo = got["info"]
        assert ginfo.world_size == WORLD
        assert ginfo.anchor_offset == SPLIT_ANCHORS[rank][0]
        assert torch.equal(ginfo.ref_labels, REF_LABELS)
        assert torch.equal(ginfo.pos_mask, info.pos_mask)
        for g, s in zip(ginfo.triplets, info.triplets, strict=True):
            assert torch.equal(g, s)
        for g, s in zip(ginfo.indices, info.indices, strict=True):
            assert torch.equal(g, s)
        # same loss value on every rank, the single-process one (not scaled by the world size)
        assert float(got["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-7)
        assert float(ginfo.loss) == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-7)
        # after DDP's gradient averaging: the single-process gradient on the concatenated batch
        torch.testing.assert_close(got["weight_grad"], model.weight.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["bias_grad"], model.bias.grad, rtol=1e-5, atol=1e-6)


def test_artwork_paired_with_anchor_is_never_its_negative(results: list[dict[str, Any]]) -> None:
    info = results[0]["triplet"]["info"]
    labels = info.ref_labels.tolist()
    a, p, n = (t.tolist() for t in info.triplets)
    assert len(a) > 0
    for ai, pi, ni in zip(a, p, n, strict=True):
        assert labels[pi] in POSITIVES[ai]
        assert labels[ni] not in POSITIVES[ai]
    # label 8 came to rank 1 as anchor 4's mined negative (ref 9): it is anchor 1's and 3's positive
    assert info.pos_mask[1, 9] and info.pos_mask[3, 9] and not info.pos_mask[4, 9]
    # refs of rank 1 are extra negatives for rank 0's anchors (anchor 0, positive ref 0)
    assert {ni for ai, pi, ni in zip(a, p, n, strict=True) if ai == 0} >= {6, 7}
    assert torch.equal(info.pos_mask, positive_mask(POSITIVES, REF_LABELS))


def test_gallery_bank_two_workers(results: list[dict[str, Any]]) -> None:
    single = GalleryBank(BANK_SIZE, BANK_DIM)
    single.refresh(lambda idx: BANK_TABLE[idx] + 1.0, batch_size=BANK_BATCH)
    for out in results:
        assert torch.equal(out["bank"], single.embeddings)
    shards = [[i for batch in out["bank_calls"] for i in batch] for out in results]
    assert shards[0] == list(range(0, BANK_SIZE, 2))
    assert shards[1] == list(range(1, BANK_SIZE, 2))
    assert set(shards[0]).isdisjoint(shards[1])
    assert all(len(batch) <= BANK_BATCH for out in results for batch in out["bank_calls"])
