import jax.numpy as jnp
import numpy as np
import pytest

from prefixlab import checkpoint as ckpt
from prefixlab.stopping import STOP_REASONS, EarlyStopping, StopRule
from prefixlab.train import OptimConfig, make_optimizer, run_keys, run_training

R, CHUNK = 3, 5


def loss_fn(trainable, _frozen, _run_data, key):
    return jnp.sum((trainable["w"] - 1.0) ** 2)


class Scripted:
    """validate() that returns the scripted (loss_R, exact_R) of each evaluation and keeps what it saw."""

    def __init__(self, losses, exacts):
        self.losses, self.exacts, self.seen = np.asarray(losses, np.float32), np.asarray(exacts, np.float32), []

    def __call__(self, trainable, frozen, run_data):
        i = len(self.seen)
        self.seen.append(np.array(trainable["w"]))
        return self.losses[min(i, len(self.losses) - 1)], self.exacts[min(i, len(self.exacts) - 1)]


def train(validate, steps=30, rule=StopRule(patience=2, tol=0.0), resume=None):
    stopping = EarlyStopping(rule, validate)
    out = run_training(loss_fn, {"w": jnp.zeros((R, 4))}, None, None, jnp.full((R,), 0.05),
                       make_optimizer(OptimConfig(weight_decay=0.0)), run_keys(list(range(R))), steps, CHUNK,
                       progress=False, resume=resume, stopping=stopping)
    return out, stopping


def test_a_stopped_run_stays_unchanged_while_its_group_trains_on():
    # run 0 solves the split at the 2nd validation (step 10); runs 1 and 2 keep improving
    evals = 6
    losses = [[1.0 - 0.1 * i] * R for i in range(evals)]
    exacts = [[1.0 if i >= 1 else 0.0, 0.0, 0.0] for i in range(evals)]
    v = Scripted(losses, exacts)
    (trainable, losses_RU, _), stopping = train(v)
    seen = np.stack(v.seen)  # (evaluations, R, 4)
    assert losses_RU.shape == (R, 30)
    np.testing.assert_array_equal(seen[2:, 0], np.broadcast_to(seen[1, 0], seen[2:, 0].shape))  # frozen after step 10
    assert not np.allclose(seen[-1, 1], seen[1, 1])  # the others moved on
    assert stopping.stop_step.tolist() == [10, 30, 30]
    assert [STOP_REASONS[c] for c in stopping.reason] == ["solved", "budget", "budget"]
    np.testing.assert_array_equal(np.asarray(trainable["w"])[0], seen[1, 0])  # the solving parameters come back


def test_plateau_stops_every_run_and_ends_the_program_early_with_the_best_parameters():
    # validation loss: best at the 2nd evaluation, then no gain: with patience 2 every run stops at step 20
    v = Scripted([[1.0] * R, [0.5] * R, [0.6] * R, [0.7] * R, [0.7] * R], [[0.0] * R])
    (trainable, losses_RU, _), stopping = train(v, steps=40)
    assert stopping.stop_step.tolist() == [20] * R and {STOP_REASONS[c] for c in stopping.reason} == {"plateau"}
    assert losses_RU.shape == (R, 20) and len(v.seen) == 4  # nothing ran after everyone stopped
    np.testing.assert_array_equal(np.asarray(trainable["w"]), v.seen[1])  # best = lowest validation loss


def test_the_curve_keeps_every_validation_up_to_each_runs_stop():
    # run 0 solves at step 10, the others train the 30-step budget: 6 validations in all
    losses = [[1.0 - 0.1 * i] * R for i in range(6)]
    v = Scripted(losses, [[1.0 if i >= 1 else 0.0, 0.0, 0.5] for i in range(6)])
    (_, _, _), stopping = train(v)
    solved, budget = stopping.curve((0,)), stopping.curve((2,))
    assert solved == {"step": [5, 10], "loss": [1.0, 0.9], "exact_match": [0.0, 1.0]}
    assert budget["step"] == [5, 10, 15, 20, 25, 30] and budget["exact_match"] == [0.5] * 6
    assert budget["loss"] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])


def test_improvements_below_the_tolerance_do_not_count():
    v = Scripted([[1.0 - 1e-4 * i] * R for i in range(10)], [[0.0] * R])
    (_, _, _), stopping = train(v, rule=StopRule(patience=2, tol=1e-3))
    assert stopping.stop_step.tolist() == [15] * R


def test_a_non_finite_validation_loss_stops_the_run_as_diverged():
    v = Scripted([[1.0, 1.0, 1.0], [np.nan, 0.9, 0.9]] + [[np.nan, 0.9 - 0.1 * i, 0.9] for i in range(5)],
                 [[0.0] * R])
    (_, _, _), stopping = train(v)
    assert [STOP_REASONS[c] for c in stopping.reason] == ["diverged", "budget", "plateau"]
    assert stopping.stop_step.tolist() == [10, 30, 20]


def test_resume_continues_the_rule_where_it_was(tmp_path):
    """A run saved mid-way and continued stops where an unbroken one does, with the same parameters."""
    script = ([[1.0] * R, [0.5] * R, [0.6] * R, [0.7] * R, [0.7] * R], [[0.0] * R])
    (full, l_full, _), s_full = train(Scripted(*script), steps=40)

    class Interrupt(Scripted):
        interrupted = False

        def __call__(self, *a):  # Ctrl-C during the 2nd validation: the host redoes it before saving
            if len(self.seen) == 1 and not self.interrupted:
                self.interrupted = True
                raise KeyboardInterrupt
            return super().__call__(*a)

    partial = ckpt.ChunkCheckpoint(tmp_path / "p", every_s=0)
    with pytest.raises(KeyboardInterrupt):
        train(Interrupt(*script), steps=40, resume=partial)
    assert ckpt.exists(tmp_path / "p")
    rest = Scripted(script[0][2:], script[1])  # two validations happened before the save
    (back, l_back, _), s_back = train(rest, steps=40, resume=partial)
    assert s_back.stop_step.tolist() == s_full.stop_step.tolist() == [20] * R
    np.testing.assert_array_equal(np.asarray(back["w"]), np.asarray(full["w"]))
    np.testing.assert_array_equal(l_back, l_full)
    assert s_back.curve((0,)) == s_full.curve((0,))  # the curve before the break came back with the state


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="patience"):
        StopRule(patience=0)
    with pytest.raises(ValueError, match="min_fraction"):
        StopRule(min_fraction=1.5)


# A learning curve with a long plateau and a late drop, the shape of the reference's LoRA on double_hist (a
# ~4,000-step plateau, then a drop at 5-6k of 10,000 steps), scaled to 40 validations of 5 steps each.
PLATEAU_THEN_DROP = [2.0, 1.6] + [1.5 + 1e-4 * (i % 2) for i in range(18)] + [1.2, 0.8, 0.4, 0.2] + [0.2] * 16


def _transition_run(rule):
    v = Scripted([[x] * R for x in PLATEAU_THEN_DROP], [[0.0] * R])
    (_, _, _), stopping = train(v, steps=5 * len(PLATEAU_THEN_DROP), rule=rule)
    return stopping


def test_the_first_rule_stops_right_before_a_delayed_transition():
    stopping = _transition_run(StopRule(patience=4, tol=1e-3))  # the rule as it was first written
    assert stopping.stop_step.tolist() == [35] * R and stopping.best_loss.tolist() == [1.5] * R


def test_the_transition_safe_rule_trains_through_the_plateau():
    from prefixlab.stopping import TRANSITION_SAFE

    stopping = _transition_run(TRANSITION_SAFE)
    assert (stopping.best_loss <= 0.2 + 1e-6).all()  # it saw the drop
    assert (stopping.stop_step > 5 * 24).all()


def test_falling_tells_a_trend_from_noise():
    from prefixlab.stopping import falling

    noise = 0.01 * np.random.default_rng(0).standard_normal((8, 1000))  # 1,000 runs, 8 chunk means each
    slow_fall = np.linspace(1.0, 0.9, 8)[:, None] + noise  # 0.1 nats over the window, noise 0.01
    flat = 1.0 + noise
    assert falling(slow_fall, tol=1e-3).all()
    assert falling(flat, tol=1e-3).mean() < 0.1  # a one-sided 2-standard-error test: ~5 % false alarms
    assert not falling(slow_fall, tol=0.5).any()  # falling, but by less than the tolerance
    assert not falling(slow_fall[:2], tol=1e-3).any()  # too few points to tell


def test_no_plateau_stop_while_the_training_loss_still_falls():
    rule = StopRule(patience=2, tol=1e-3, trend=True)
    stopping = EarlyStopping(rule, lambda *a: (np.full((2,), 1.0, np.float32), np.zeros((2,), np.float32)))
    stopping.start({"w": jnp.zeros((2, 3))}, None, None, (2,), n_evals=10)
    for k in range(6):  # validation flat; run 0's training loss falls, run 1's is flat
        stopping.after_chunk(5 * (k + 1), {"w": jnp.zeros((2, 3))}, np.array([[1.0 - 0.05 * k] * 5, [1.0] * 5]))
    assert stopping.active.tolist() == [True, False]
    assert stopping.falling_now.tolist() == [1, 0] and stopping.falling_at_stop.tolist() == [0, 0]
    stopping.finish(30)
    assert stopping.falling_at_stop.tolist() == [1, 0]  # run 0 reached the budget still falling
