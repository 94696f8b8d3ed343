"""The format table drives CLI choices and dispatch; never guess a format."""

from __future__ import annotations

import pytest

from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS, FORMATS, artifact_filename, backends_for, format_of, parse_format_list


def test_all_expands_in_table_order():
    assert [f.name for f in parse_format_list("all")] == list(FORMATS)


def test_unknown_format_lists_valid_ones():
    with pytest.raises(UsageError, match="valid formats: tflite-fp32"):
        parse_format_list("tflite-int4")


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_filename_round_trips(fmt):
    assert format_of(artifact_filename(fmt)) == fmt
    assert set(fmt.backends) <= set(BACKENDS)
    assert fmt.backends[0] in backends_for(fmt.family)


def test_unknown_suffix_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown model suffix"):
        backends_for("model.pb")
