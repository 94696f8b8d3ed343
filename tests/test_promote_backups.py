"""A promoted or retired artifact's replaced file is kept, however close together the replacements come."""

from __future__ import annotations


def test_two_promotions_in_one_second_keep_both_replaced_files(tmp_path, monkeypatch):
    """The kept file is named by the second: a second promotion within it overwrote the first one's backup,
    losing the original artifact."""
    from datetime import datetime, timezone

    from edgeproof.formats import FORMATS, artifact_filename
    from edgeproof.parity import promote as promote_mod

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    monkeypatch.setattr(promote_mod, "datetime", Frozen)
    art = tmp_path / "artifacts"
    art.mkdir()
    dest = art / artifact_filename(FORMATS["tflite-int8"])
    dest.write_bytes(b"original")
    for i in (1, 2):
        fixed = tmp_path / f"fix{i}.tflite"
        fixed.write_bytes(f"fix {i}".encode())
        promote_mod.promote(fixed, "tflite-int8", art, f"variant {i}", {})
    kept = sorted(p.read_bytes() for p in art.glob(f"{dest.name}.replaced-*"))
    assert dest.read_bytes() == b"fix 2" and kept == [b"fix 1", b"original"]
