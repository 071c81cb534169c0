"""Every bad input raises a ValueError or TypeError naming the argument, before XLA runs."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm

INPUT, HIDDEN, STEPS = 3, 4, 5
PARAMS = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN)
XS = jnp.ones((2, STEPS, INPUT))
STATE = jaxlstm.LSTMState(h=jnp.zeros((2, HIDDEN)), c=jnp.zeros((2, HIDDEN)))


def bad_call(**overrides):
    kwargs = dict(params=PARAMS, xs=XS)
    kwargs.update(overrides)
    return lambda: jaxlstm.lstm(kwargs.pop("params"), kwargs.pop("xs"), **kwargs)


CASES = {
    "xs_rank_1": (bad_call(xs=jnp.ones(INPUT)), ValueError,
                  r"xs must have rank >= 2, \(batch..., T, I\) with I=3, got shape \(3,\)"),
    "xs_rank_1_time_major": (bad_call(xs=jnp.ones(INPUT), time_major=True), ValueError,
                             r"xs must have rank >= 2, \(T, batch..., I\)"),
    "xs_features": (bad_call(xs=jnp.ones((2, STEPS, 7))), ValueError,
                    r"xs must have 3 features on its last axis .*got shape \(2, 5, 7\)"),
    "xs_integer": (bad_call(xs=jnp.ones((2, STEPS, INPUT), jnp.int32)), TypeError,
                   "xs must have a floating dtype .* got int32"),
    "xs_bool": (bad_call(xs=jnp.ones((2, STEPS, INPUT), bool)), TypeError,
                "xs must have a floating dtype .* got bool"),
    "params_not_lstm_params": (bad_call(params={"w_x": PARAMS.w_x}), TypeError,
                               "params must be LSTMParams.*got dict without a 'w_x' field"),
    "params_w_h_not_square_by_4": (bad_call(params=PARAMS._replace(w_h=jnp.ones((4, 12)))),
                                   ValueError,
                                   r"params.w_h must have shape \(hidden_size, 4 \* hidden_size\), got \(4, 12\)"),
    "params_w_x_mismatch": (bad_call(params=PARAMS._replace(w_x=jnp.ones((3, 12)))), ValueError,
                            r"params.w_x must have shape \(input_size, 16\) .* got \(3, 12\)"),
    "params_b_mismatch": (bad_call(params=PARAMS._replace(b=jnp.ones(12))), ValueError,
                          r"params.b must have shape \(16,\) .* got \(12,\)"),
    "params_integer": (bad_call(params=PARAMS._replace(b=jnp.ones(16, jnp.int32))), TypeError,
                       "params.b must have a floating dtype"),
    "state_batch_mismatch": (
        bad_call(initial_state=jaxlstm.LSTMState(h=jnp.zeros((3, HIDDEN)), c=STATE.c)),
        ValueError, r"initial_state.h must have shape \(2, 4\) .*got \(3, 4\)"),
    "state_hidden_mismatch": (
        bad_call(initial_state=jaxlstm.LSTMState(h=STATE.h, c=jnp.zeros((2, 5)))),
        ValueError, r"initial_state.c must have shape \(2, 4\) .*hidden_size 4.*got \(2, 5\)"),
    "state_plain_tuple": (bad_call(initial_state=(STATE.h, STATE.c)), TypeError,
                          "initial_state must be LSTMState.*got tuple"),
    "lengths_shape": (bad_call(seq_lengths=jnp.array([1, 2, 3])), ValueError,
                      r"seq_lengths must have the batch shape of xs \(2,\), got \(3,\)"),
    "lengths_float": (bad_call(seq_lengths=jnp.array([1.0, 2.0])), TypeError,
                      "seq_lengths must have an integer dtype, got float32"),
    "lengths_bool": (bad_call(seq_lengths=jnp.array([True, False])), TypeError,
                     "seq_lengths must have an integer dtype, got bool"),
    "lengths_too_long": (bad_call(seq_lengths=np.array([2, 9])), ValueError,
                         r"seq_lengths must lie in \[0, 5\] .*got values from 2 to 9"),
    "lengths_negative": (bad_call(seq_lengths=jnp.array([-1, 2])), ValueError,
                         r"seq_lengths must lie in \[0, 5\]"),
    "unroll_zero": (bad_call(unroll=0), ValueError, "unroll must be None, a positive int or a bool"),
    "cell_features": (lambda: jaxlstm.lstm_cell(PARAMS, STATE, jnp.ones((2, 7))), ValueError,
                      "x_t must have 3 features"),
    "cell_state_batch": (lambda: jaxlstm.lstm_cell(PARAMS, STATE, jnp.ones((5, INPUT))),
                         ValueError, r"state.h must have shape \(5, 4\)"),
    "cell_integer_input": (lambda: jaxlstm.lstm_cell(PARAMS, STATE, jnp.ones((2, 3), int)),
                           TypeError, "x_t must have a floating dtype"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises(name):
    call, error, match = CASES[name]
    with pytest.raises(error, match=match):
        call()


def test_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=re.escape("xs must have 3 features")):
        jax.jit(jaxlstm.lstm)(PARAMS, jnp.ones((2, STEPS, 7)))
    with pytest.raises(TypeError, match="seq_lengths must have an integer dtype"):
        jax.jit(lambda n: jaxlstm.lstm(PARAMS, XS, seq_lengths=n))(jnp.ones(2))
