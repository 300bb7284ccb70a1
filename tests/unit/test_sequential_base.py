"""The sequential models' shared machinery: windows, padding, causality, losses, sessions, SASRec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cinesync.cli import cli
from cinesync.errors import CineSyncError, UnknownIdError
from cinesync.testing import toy_dataset
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import gbce_loss
from cinesync_plugins.recommenders._sequential import PAD, left_padded, sequence_windows
from cinesync_plugins.recommenders.ease import EASE
from cinesync_plugins.recommenders.sasrec import SASRec

FAST = TrainerConfig(epochs=3, batch_size=8, progress=False, early_stopping_metric=None)


@pytest.fixture(scope="module")
def sasrec() -> SASRec:
    return SASRec(max_length=6, dim=16, heads=2, dropout=0.0).fit(toy_dataset(), trainer=FAST)


def test_left_padding_keeps_the_most_recent_items_at_the_end() -> None:
    padded = left_padded([np.array([4, 5, 6, 7]), np.array([2]), np.array([], np.int64)], 3)
    assert padded.tolist() == [[6, 7, 8], [0, 0, 3], [0, 0, 0]]


def test_windows_make_every_item_but_the_first_a_target_exactly_once() -> None:
    sequences = [np.arange(11), np.array([3, 1]), np.array([9])]
    windows = sequence_windows(sequences, 4)["sequences"]
    targets = windows[:, 1:]
    inputs = windows[:, :-1]
    trained = targets[(inputs != PAD) & (targets != PAD)] - 1
    expected = sorted([*range(1, 11), 1])
    assert sorted(trained.tolist()) == expected
    assert windows.shape[1] == 5


def test_gbce_without_calibration_is_binary_cross_entropy() -> None:
    positives, negatives = torch.randn(6), torch.randn(6, 3)
    plain = gbce_loss(positives, negatives, n_items=100, calibration=0.0)
    logits = torch.cat([positives.unsqueeze(1), negatives], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(1).mean()
    torch.testing.assert_close(plain, bce)
    # Calibration shrinks the weight of the positive term (β < 1 when negatives are sampled sparsely).
    assert gbce_loss(positives, negatives, 100, 1.0) < plain


def test_sasrec_states_are_causal_and_ignore_padding(sasrec: SASRec) -> None:
    encoder = sasrec.encoder.eval()
    with torch.no_grad():
        first = encoder.states(torch.tensor([[0, 3, 5, 7, 9, 11]]))
        changed = encoder.states(torch.tensor([[0, 3, 5, 7, 2, 4]]))
        torch.testing.assert_close(first[:, :4], changed[:, :4])
        assert not torch.allclose(first[:, 5], changed[:, 5])
        shorter = encoder.states(torch.tensor([[0, 0, 5, 7, 9, 11]]))
        cut = encoder.states(torch.tensor([[5, 7, 9, 11]]))
        torch.testing.assert_close(shorter[:, -1], cut[:, -1])
        assert torch.isfinite(shorter).all()


def test_a_session_scores_like_a_user_with_that_history(sasrec: SASRec) -> None:
    data = toy_dataset()
    user = 3
    history = data.sequences()[user]
    session = data.items.lookup(history.tolist())
    by_session = sasrec.recommend(sessions=[session], k=5)
    by_user = sasrec.recommend([data.users.ids[user]], k=5)
    assert by_session.users == ["session-0"]
    assert by_session.items == by_user.items
    np.testing.assert_allclose(by_session.scores, by_user.scores, rtol=1e-5)
    assert not set(by_session.items[0]) & set(session)


def test_session_errors_are_clear(sasrec: SASRec) -> None:
    with pytest.raises(UnknownIdError, match="no-such-item"):
        sasrec.recommend(sessions=[["m1", "no-such-item"]])
    with pytest.raises(CineSyncError, match="empty"):
        sasrec.recommend(sessions=[[]])
    with pytest.raises(CineSyncError, match="exactly one"):
        sasrec.recommend(["u1"], sessions=[["m1"]])
    ease = EASE(l2=1.0).fit(toy_dataset())
    with pytest.raises(CineSyncError, match="not anonymous sessions"):
        ease.recommend(sessions=[["m1"]])


def test_a_user_without_history_falls_back_to_popularity(sasrec: SASRec) -> None:
    assert sasrec.history is not None and sasrec._item_counts is not None
    saved = sasrec.history[0].clone()
    try:
        sasrec.history[0] = PAD
        scores = sasrec.score(torch.tensor([0]))[0]
    finally:
        sasrec.history[0] = saved
    expected = torch.log1p(torch.from_numpy(sasrec._item_counts).float())
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("loss", ["softmax", "bce", "gbce", "sampled_softmax"])
def test_every_loss_trains(loss: str) -> None:
    data = toy_dataset()
    model = SASRec(max_length=6, dim=16, dropout=0.0, loss=loss, negatives=4)
    model.fit(
        data, trainer=TrainerConfig(epochs=15, batch_size=64, progress=False, early_stopping_metric=None)
    )
    assert model.training_report is not None
    losses = [record["loss"] for record in model.training_report.history]
    assert losses[-1] < losses[0]


def test_history_is_saved_and_not_counted_as_parameters(sasrec: SASRec, tmp_path: Path) -> None:
    assert sasrec.n_parameters() == sum(p.numel() for p in sasrec.encoder.parameters())
    sasrec.save(str(tmp_path / "model"))
    runner = CliRunner()
    done = runner.invoke(
        cli, ["recommend", str(tmp_path / "model"), "--session", "m1, m3", "-k", "4", "--json"]
    )
    assert done.exit_code == 0, done.output
    records = json.loads(done.output)
    assert [r["user"] for r in records] == ["session-0"] * 4
    assert not {r["item"] for r in records} & {"m1", "m3"}
    expected = sasrec.recommend(sessions=[["m1", "m3"]], k=4)
    assert [r["item"] for r in records] == expected.items[0]
    both = runner.invoke(cli, ["recommend", str(tmp_path / "model"), "--session", "m1", "--user", "u1"])
    assert both.exit_code != 0 and "not both" in both.output


def test_sampled_losses_draw_negatives_for_every_target_position() -> None:
    model = SASRec(max_length=6, dim=16, dropout=0.0, loss="gbce", negatives=5).fit(
        toy_dataset(), trainer=FAST
    )
    examples = model.training_examples(toy_dataset())
    batch = model.collate({k: v[:8] for k, v in examples.items()}, torch.Generator().manual_seed(0))
    assert batch["negatives"].shape == (*batch["targets"].shape, 5)
    assert torch.isfinite(model.loss(batch))


def test_binary_next_item_losses_shift_logits_by_log_negatives() -> None:
    from cinesync_plugins.recommenders._sequential import SequentialConfig, next_item_loss

    generator = torch.Generator().manual_seed(0)
    states, weights = torch.randn(5, 4, generator=generator), torch.randn(20, 4, generator=generator)
    targets = torch.tensor([0, 3, 7, 7, 19])
    negatives = torch.randint(0, 20, (5, 8), generator=generator)
    positive_logits = (states * weights[targets]).sum(-1)
    negative_logits = states @ weights.t()
    negative_logits = negative_logits.gather(1, negatives)
    config = SequentialConfig(loss="gbce", negatives=8, gbce_calibration=0.75)
    shift = torch.log(torch.tensor(8.0))
    expected = gbce_loss(positive_logits - shift, negative_logits - shift, 20, 0.75)
    torch.testing.assert_close(next_item_loss(config, states, targets, weights, negatives), expected)
    # SASRec's one-negative BCE is left as the paper has it: log 1 = 0.
    one = negatives[:, :1]
    config = SequentialConfig(loss="bce", negatives=1)
    plain = gbce_loss(positive_logits, negative_logits[:, :1], 20, 0.0)
    torch.testing.assert_close(next_item_loss(config, states, targets, weights, one), plain)
