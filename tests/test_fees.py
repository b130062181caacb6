"""Deribit fees and call payoffs, pinned against hand-worked figures.

Schedule (shared/notes/deribit.md): trading fee = fee_rate of the underlying per coin, capped at
12.5% of the option price; delivery fee = delivery_fee_rate of the underlying, capped at 12.5% of
the option's value at expiry, only in the money and never on dailies. Inverse fees are in coin
(fee_rate of 1 coin = fee_rate coin); linear fees are in USDC (fee_rate x index).
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.fees import call_payoff_per_coin, delivery_fee_per_coin, trade_fee_per_coin
from sim.pricing import inverse_price_coin

CAP = 0.125


# ----------------------------------------------------------------------------- trading fee

def test_inverse_trade_fee_worked_example_cap_binds():
    # Coin price 0.00073489: 12.5% of it is 0.00009186125 coin < 0.0003 coin, so the cap binds.
    fee = trade_fee_per_coin(0.00073489, 60_200.0, 0.0003, CAP, "inverse")
    assert isinstance(fee, float)
    assert fee == pytest.approx(0.125 * 0.00073489, rel=1e-15)
    assert fee == pytest.approx(0.00009186125, rel=1e-12)
    assert round(fee, 8) == 0.00009186  # the note's figure


def test_inverse_trade_fee_from_model_price_of_worked_example():
    price_coin = float(inverse_price_coin(60_200.0, 70_000.0, 7 / 365, 0.55))
    fee = trade_fee_per_coin(price_coin, 60_200.0, 0.0003, CAP, "inverse")
    assert round(fee, 8) == 0.00009186


def test_inverse_trade_fee_cap_does_not_bind():
    # 12.5% of 0.01 coin = 0.00125 > 0.0003: the flat 0.03% of one coin applies.
    assert trade_fee_per_coin(0.01, 60_000.0, 0.0003, CAP, "inverse") == pytest.approx(0.0003, rel=1e-15)
    # The inverse fee does not depend on the index (it is 0.03% of 1 coin, in coin).
    assert trade_fee_per_coin(0.01, 5_000.0, 0.0003, CAP, "inverse") == pytest.approx(0.0003, rel=1e-15)


def test_inverse_trade_fee_cap_boundary():
    # Cap and flat fee meet at price = 0.0003 / 0.125 = 0.0024 coin.
    assert trade_fee_per_coin(0.0024, 60_000.0, 0.0003, CAP, "inverse") == pytest.approx(0.0003, rel=1e-12)
    assert trade_fee_per_coin(0.0020, 60_000.0, 0.0003, CAP, "inverse") == pytest.approx(0.00025, rel=1e-12)


def test_linear_trade_fee_no_cap():
    # SOL index 150 USD, taker 0.05%: 0.075 USDC per SOL; 12.5% of 5 USDC = 0.625 does not bind.
    fee = trade_fee_per_coin(5.0, 150.0, 0.0005, CAP, "linear")
    assert fee == pytest.approx(0.075, rel=1e-12)
    # Per contract of 10 SOL that is 0.75 USDC.
    assert 10 * fee == pytest.approx(0.75, rel=1e-12)


def test_linear_trade_fee_cap_binds():
    # Price 0.4 USDC: 12.5% of it = 0.05 USDC < 0.075 USDC.
    assert trade_fee_per_coin(0.4, 150.0, 0.0005, CAP, "linear") == pytest.approx(0.05, rel=1e-12)


def test_trade_fee_vectorized():
    fee = trade_fee_per_coin(np.array([0.00073489, 0.01, 0.0]), 60_000.0, 0.0003, CAP, "inverse")
    assert isinstance(fee, np.ndarray)
    np.testing.assert_allclose(fee, [0.00009186125, 0.0003, 0.0], rtol=1e-12, atol=0.0)
    fee = trade_fee_per_coin(np.array([5.0, 0.4]), np.array([150.0, 150.0]), 0.0005, CAP, "linear")
    np.testing.assert_allclose(fee, [0.075, 0.05], rtol=1e-12)


# ----------------------------------------------------------------------------- call payoff

def test_inverse_call_payoff_in_coin():
    # (110,000 - 100,000) / 110,000 = 1/11 coin per coin.
    assert call_payoff_per_coin(110_000.0, 100_000.0, "inverse") == pytest.approx(1 / 11, rel=1e-15)
    assert call_payoff_per_coin(90_000.0, 100_000.0, "inverse") == 0.0
    assert call_payoff_per_coin(100_000.0, 100_000.0, "inverse") == 0.0


def test_inverse_assignment_leaves_strike_in_usd():
    # A covered inverse call assigned at S_T: 1 - (S_T - K)/S_T = K/S_T coins remain, worth K USD.
    s_t, k = 137_500.0, 100_000.0
    remaining_coin = 1.0 - call_payoff_per_coin(s_t, k, "inverse")
    assert remaining_coin * s_t == pytest.approx(k, rel=1e-14)


def test_linear_call_payoff_in_usdc():
    assert call_payoff_per_coin(160.0, 150.0, "linear") == pytest.approx(10.0, rel=1e-15)
    assert call_payoff_per_coin(140.0, 150.0, "linear") == 0.0
    # Same USD value as the inverse payoff times the settlement price.
    inv = call_payoff_per_coin(110_000.0, 100_000.0, "inverse")
    lin = call_payoff_per_coin(110_000.0, 100_000.0, "linear")
    assert lin == pytest.approx(inv * 110_000.0, rel=1e-14)
    assert lin == pytest.approx(10_000.0, rel=1e-15)


def test_call_payoff_vectorized():
    out = call_payoff_per_coin(np.array([80_000.0, 100_000.0, 125_000.0]), 100_000.0, "inverse")
    np.testing.assert_allclose(out, [0.0, 0.0, 0.2], rtol=1e-15, atol=0.0)


# ----------------------------------------------------------------------------- delivery fee

def test_inverse_delivery_fee_in_the_money_flat():
    # Payoff 1/11 coin: 12.5% of it = 0.01136 > 0.00015, so the flat 0.015% of one coin applies.
    payoff = call_payoff_per_coin(110_000.0, 100_000.0, "inverse")
    fee = delivery_fee_per_coin(payoff, 110_000.0, 0.00015, CAP, "inverse", is_daily=False)
    assert fee == pytest.approx(0.00015, rel=1e-15)


def test_inverse_delivery_fee_capped_at_payoff_share():
    # S_T 100,100, K 100,000: payoff 100/100,100 coin; 12.5% of it = 0.000124875... < 0.00015.
    payoff = call_payoff_per_coin(100_100.0, 100_000.0, "inverse")
    fee = delivery_fee_per_coin(payoff, 100_100.0, 0.00015, CAP, "inverse", is_daily=False)
    assert fee == pytest.approx(0.125 * 100.0 / 100_100.0, rel=1e-12)
    assert fee < 0.00015


def test_delivery_fee_zero_out_of_the_money_and_on_dailies():
    assert delivery_fee_per_coin(0.0, 90_000.0, 0.00015, CAP, "inverse", is_daily=False) == 0.0
    # In the money but a daily expiry: no delivery fee.
    assert delivery_fee_per_coin(1 / 11, 110_000.0, 0.00015, CAP, "inverse", is_daily=True) == 0.0
    assert delivery_fee_per_coin(10.0, 160.0, 0.00015, CAP, "linear", is_daily=True) == 0.0


def test_linear_delivery_fee():
    # SOL settles at 150 with strike 140: payoff 10 USDC; 0.015% x 150 = 0.0225 USDC (cap 1.25 not binding).
    assert delivery_fee_per_coin(10.0, 150.0, 0.00015, CAP, "linear", False) == pytest.approx(0.0225, rel=1e-12)
    # Strike 149.9: payoff 0.1 USDC, cap 0.0125 USDC < 0.0225.
    payoff = call_payoff_per_coin(150.0, 149.9, "linear")
    fee = delivery_fee_per_coin(payoff, 150.0, 0.00015, CAP, "linear", False)
    assert fee == pytest.approx(0.125 * 0.1, rel=1e-9)


def test_delivery_fee_vectorized():
    payoff = call_payoff_per_coin(np.array([90_000.0, 110_000.0, 110_000.0, 100_100.0]), 100_000.0, "inverse")
    fee = delivery_fee_per_coin(payoff, 0.0, 0.00015, CAP, "inverse",
                                is_daily=np.array([False, False, True, False]))
    np.testing.assert_allclose(fee, [0.0, 0.00015, 0.0, 0.125 * 100.0 / 100_100.0], rtol=1e-12, atol=0.0)


def test_put_payoff_is_intrinsic_in_the_settlement_unit():
    from sim.fees import option_payoff_per_coin

    assert option_payoff_per_coin(80_000.0, 100_000.0, "inverse", "put") == pytest.approx(0.25)  # 20,000 / 80,000
    assert option_payoff_per_coin(80_000.0, 100_000.0, "linear", "put") == 20_000.0
    assert option_payoff_per_coin(120_000.0, 100_000.0, "inverse", "put") == 0.0
    assert option_payoff_per_coin(110_000.0, 100_000.0, "inverse") == call_payoff_per_coin(110_000.0, 100_000.0,
                                                                                           "inverse")
    with pytest.raises(ValueError, match="option_type='straddle'"):
        option_payoff_per_coin(1.0, 1.0, "linear", "straddle")
