from __future__ import annotations

import numpy as np
import pytest

from ml.drift import drift_report, profile, psi


def test_psi_of_a_sample_from_the_same_distribution_is_small_and_of_a_shift_is_large() -> None:
    rng = np.random.default_rng(0)
    reference = profile(rng.normal(0, 1, 5000))
    assert psi(reference, rng.normal(0, 1, 5000)) < 0.02
    assert psi(reference, rng.normal(1, 1, 5000)) > 0.25


def test_psi_matches_a_hand_computed_categorical_example() -> None:
    reference = profile(["a"] * 50 + ["b"] * 50)
    # p_ref = (0.5, 0.5), p_new = (0.8, 0.2): 0.3 ln(1.6) + (-0.3) ln(0.4)
    assert psi(reference, ["a"] * 80 + ["b"] * 20) == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4), rel=1e-9)


def test_missing_values_have_their_own_bin() -> None:
    reference = profile([1.0, 2.0, 3.0, 4.0] * 25)
    assert psi(reference, [float("nan")] * 100) > 1


def test_drift_report_flags_any_part_over_the_threshold() -> None:
    import pandas as pd

    rng = np.random.default_rng(1)
    reference = {"scores": profile(rng.uniform(0, 1, 2000)), "features": {"orders_30d": profile(rng.poisson(3, 2000))}}
    stable = drift_report(
        reference, rng.uniform(0, 1, 2000), pd.DataFrame({"orders_30d": rng.poisson(3, 2000)}), threshold=0.2
    )
    shifted = drift_report(
        reference, rng.uniform(0, 1, 2000), pd.DataFrame({"orders_30d": rng.poisson(9, 2000)}), threshold=0.2
    )
    assert not stable["drifted"] and shifted["drifted"] and shifted["feature_psi"]["orders_30d"] > 0.2


def test_an_infinite_value_falls_in_an_outer_bin_and_the_profile_stays_strict_json() -> None:
    import json
    import math

    values = [0.1, 0.2, 0.3, 0.4, math.inf, math.inf]
    reference = profile(values)

    assert all(math.isfinite(edge) for edge in reference["edges"]), reference["edges"]
    json.dumps(reference, allow_nan=False)
    assert psi(reference, values) == 0.0
