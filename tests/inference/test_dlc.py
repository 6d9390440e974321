"""Reading DeepLabCut projects: the real openfield project in ../shared and small synthetic
projects written on the spot (config.yaml, a few PNGs, labels as CSV or .h5)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from rigstream.inference.dlc import (
    DlcProjectError,
    LabeledData,
    derive_left_right,
    load_dlc_project,
    load_image,
    read_split,
    train_test_split,
    write_split,
)

OPENFIELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "openfield"

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
# (video, image, W, H) and the labels: (3 images, 4 keypoints, 2), NaN = not labeled.
SYNTH_IMAGES = [("vidA", "img000.png", 48, 32), ("vidA", "img001.png", 48, 32),
                ("vidB", "img000.png", 40, 30)]
SYNTH_PX = np.array([
    [[1.5, 2.25], [10.0, 11.0], [np.nan, np.nan], [20.125, 30.5]],
    [[np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan], [np.nan, np.nan]],
    [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]],
], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Synthetic projects


def write_project(root: Path, fmt: str = "csv1", bodyparts: list[str] | None = None,
                  columns: list[str] | None = None, scorer: str = "Tester", file_scorer: str | None = None,
                  skeleton: list[list[str]] | None = None, **config) -> Path:
    """A DeepLabCut single-animal project in ``root``: config.yaml, one small gray PNG per row
    of SYNTH_IMAGES and labels per video folder as ``fmt``: "csv1" (one index column), "csv3"
    (three index columns), "h5" (pandas to_hdf, key df_with_missing, three-level index, as
    newer DeepLabCut writes) or "h5-table" (one path index in PyTables' table format, as older
    DeepLabCut wrote; the table format cannot hold a three-level index with these columns).

    ``columns`` are the bodyparts written in the label files (default: config's bodyparts, the
    values of a bodypart not in BODYPARTS are zeros)."""
    import pandas as pd

    bodyparts = BODYPARTS if bodyparts is None else bodyparts
    columns = bodyparts if columns is None else columns
    file_scorer = scorer if file_scorer is None else file_scorer
    root.mkdir(parents=True, exist_ok=True)
    doc = {"Task": "synth", "scorer": scorer, "date": "Jan1", "multianimalproject": False,
           "bodyparts": bodyparts, "skeleton": skeleton or [], **config}
    (root / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    rng = np.random.default_rng(0)
    for video in sorted({v for v, *_ in SYNTH_IMAGES}):
        rows = [(i, img) for i, (v, img, *_) in enumerate(SYNTH_IMAGES) if v == video]
        folder = root / "labeled-data" / video
        folder.mkdir(parents=True)
        values = []
        for i, img in rows:
            _, _, w, h = SYNTH_IMAGES[i]
            cv2.imwrite(str(folder / img), rng.integers(0, 256, (h, w), dtype=np.uint8))
            per_bp = [SYNTH_PX[i, BODYPARTS.index(bp)] if bp in BODYPARTS else [0.0, 0.0] for bp in columns]
            values.append(np.concatenate(per_bp))
        cols = pd.MultiIndex.from_product([[file_scorer], columns, ["x", "y"]],
                                          names=["scorer", "bodyparts", "coords"])
        if fmt in ("csv1", "h5-table"):
            index = pd.Index([f"labeled-data/{video}/{img}" for _, img in rows])
        else:
            index = pd.MultiIndex.from_tuples([("labeled-data", video, img) for _, img in rows])
        df = pd.DataFrame(np.array(values, dtype=np.float64), index=index, columns=cols)
        stem = folder / f"CollectedData_{file_scorer}"
        if fmt.startswith("h5"):
            pytest.importorskip("tables", reason="writing .h5 labels needs PyTables")
            df.to_hdf(stem.with_suffix(".h5"), key="df_with_missing", mode="w",
                      format="table" if fmt == "h5-table" else "fixed")
        else:
            df.to_csv(stem.with_suffix(".csv"))
    return root


def test_synthetic_csv_single_index(tmp_path):
    data = load_dlc_project(write_project(tmp_path / "p", "csv1"))
    assert isinstance(data, LabeledData)
    assert data.project == (tmp_path / "p").resolve()
    assert data.task == "synth" and data.scorer == "Tester"
    assert data.keypoints == BODYPARTS
    assert data.left_right == [("leftear", "rightear")]
    assert data.names == [f"labeled-data/{v}/{img}" for v, img, *_ in SYNTH_IMAGES]
    assert data.images == [data.project / n for n in data.names]
    assert all(p.is_absolute() and p.is_file() for p in data.images)
    assert data.image_sizes == [(w, h) for *_, w, h in SYNTH_IMAGES]
    assert data.keypoints_px.dtype == np.float32 and data.keypoints_px.shape == (3, 4, 2)
    np.testing.assert_array_equal(data.keypoints_px, SYNTH_PX.astype(np.float32))
    # NaN labels are preserved; the all-NaN row is kept and counted.
    assert int(np.isnan(data.keypoints_px).sum()) == int(np.isnan(SYNTH_PX).sum())
    assert data.unlabeled_rows == 1
    assert data.visible.tolist() == [[True, True, False, True], [False] * 4, [True] * 4]


@pytest.mark.parametrize("fmt", ["csv3", "h5", "h5-table"])
def test_synthetic_formats_load_the_same(tmp_path, fmt):
    ref = load_dlc_project(write_project(tmp_path / "ref", "csv1"))
    data = load_dlc_project(write_project(tmp_path / fmt, fmt))
    assert data.names == ref.names
    assert data.image_sizes == ref.image_sizes
    assert data.keypoints == ref.keypoints
    np.testing.assert_array_equal(data.keypoints_px, ref.keypoints_px)
    assert data.unlabeled_rows == 1


def test_h5_preferred_over_csv(tmp_path):
    root = write_project(tmp_path / "p", "h5")
    # A CSV beside the .h5 with different values: the .h5 wins.
    import pandas as pd

    for h5 in root.glob("labeled-data/*/CollectedData_Tester.h5"):
        df = pd.read_hdf(h5)
        (df + 1000).to_csv(h5.with_suffix(".csv"))
    data = load_dlc_project(root)
    np.testing.assert_array_equal(data.keypoints_px, SYNTH_PX.astype(np.float32))


def test_h5_without_pytables_is_a_clear_error(tmp_path, monkeypatch):
    root = write_project(tmp_path / "p", "h5")
    monkeypatch.setitem(sys.modules, "tables", None)  # import tables -> ImportError
    with pytest.raises(DlcProjectError, match=r"CollectedData_Tester\.h5.*pip install tables.*CSV"):
        load_dlc_project(root)


def test_likelihood_column_ignored(tmp_path):
    root = write_project(tmp_path / "p", "csv1")
    for csv in root.glob("labeled-data/*/CollectedData_Tester.csv"):
        lines = csv.read_text().splitlines()
        extra = [",Tester", ",snout", ",likelihood"] + [",0.9"] * (len(lines) - 3)
        csv.write_text("\n".join(line + e for line, e in zip(lines, extra, strict=True)) + "\n")
    data = load_dlc_project(root)
    np.testing.assert_array_equal(data.keypoints_px, SYNTH_PX.astype(np.float32))


def test_other_scorer_file_used_with_warning(tmp_path, caplog):
    root = write_project(tmp_path / "p", "csv1", scorer="Config", file_scorer="Someone")
    with caplog.at_level(logging.WARNING, logger="rigstream.inference.dlc"):
        data = load_dlc_project(root)
    assert "CollectedData_Someone.csv" in caplog.text and "Config" in caplog.text
    assert data.scorer == "Config"
    np.testing.assert_array_equal(data.keypoints_px, SYNTH_PX.astype(np.float32))


def test_two_other_scorers_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1", scorer="Config", file_scorer="Someone")
    src = root / "labeled-data" / "vidA" / "CollectedData_Someone.csv"
    (src.parent / "CollectedData_Other.csv").write_text(src.read_text())
    with pytest.raises(DlcProjectError, match=r"vidA.*CollectedData_Config.*several"):
        load_dlc_project(root)


def test_folder_without_labels_is_skipped(tmp_path):
    root = write_project(tmp_path / "p", "csv1")
    (root / "labeled-data" / "vidA_labeled").mkdir()  # what DeepLabCut's check_labels writes
    (root / "labeled-data" / "vidC").mkdir()
    cv2.imwrite(str(root / "labeled-data" / "vidC" / "img000.png"), np.zeros((8, 8), np.uint8))
    assert len(load_dlc_project(root)) == 3


# ---------------------------------------------------------------------------------------------
# Errors


def test_extra_bodypart_column_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1", columns=[*BODYPARTS, "tailtip"])
    with pytest.raises(DlcProjectError, match=r"CollectedData_Tester\.csv.*'tailtip'.*config\.yaml"):
        load_dlc_project(root)


def test_missing_bodypart_column_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1", columns=["snout", "leftear", "tailbase"])
    with pytest.raises(DlcProjectError, match=r"CollectedData_Tester\.csv.*no columns.*'rightear'"):
        load_dlc_project(root)


def test_missing_bodypart_column_h5_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "h5", columns=["snout", "leftear", "tailbase"])
    with pytest.raises(DlcProjectError, match=r"CollectedData_Tester\.h5.*no columns.*'rightear'"):
        load_dlc_project(root)


def test_missing_image_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv3")
    missing = root / "labeled-data" / "vidA" / "img001.png"
    missing.unlink()
    with pytest.raises(DlcProjectError, match=r"img001\.png.*does not exist") as exc:
        load_dlc_project(root)
    assert str(missing.resolve()) in str(exc.value)


def test_unreadable_image_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1")
    bad = root / "labeled-data" / "vidB" / "img000.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DlcProjectError, match=r"vidB.img000\.png.*unreadable"):
        load_dlc_project(root)
    with pytest.raises(DlcProjectError, match=r"vidB.img000\.png.*unreadable"):
        load_image(bad, 1)


def test_multianimal_config_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1", multianimalproject=True)
    with pytest.raises(DlcProjectError, match=r"config\.yaml.*multianimalproject.*individuals"):
        load_dlc_project(root)


def test_missing_config_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1")
    (root / "config.yaml").unlink()
    with pytest.raises(DlcProjectError, match=r"no config\.yaml") as exc:
        load_dlc_project(root)
    assert str(root.resolve()) in str(exc.value)


def test_no_labeled_data_is_an_error(tmp_path):
    root = write_project(tmp_path / "p", "csv1")
    for csv in root.glob("labeled-data/*/*.csv"):
        csv.unlink()
    with pytest.raises(DlcProjectError, match=r"labeled-data.*no CollectedData"):
        load_dlc_project(root)


def test_missing_labeled_data_folder_is_an_error(tmp_path):
    import shutil

    root = write_project(tmp_path / "p", "csv1")
    shutil.rmtree(root / "labeled-data")
    with pytest.raises(DlcProjectError, match=r"labeled-data.*missing"):
        load_dlc_project(root)


def test_skeleton_read_and_checked(tmp_path):
    data = load_dlc_project(write_project(tmp_path / "p", "csv1",
                                          skeleton=[["snout", "leftear"], ["snout", "rightear"]]))
    assert data.skeleton == [("snout", "leftear"), ("snout", "rightear")]
    with pytest.raises(DlcProjectError, match=r"config\.yaml.*skeleton.*'nose'"):
        load_dlc_project(write_project(tmp_path / "q", "csv1", skeleton=[["nose", "leftear"]]))


# ---------------------------------------------------------------------------------------------
# Splits


def test_split_deterministic_disjoint_covering(tmp_path):
    data = load_dlc_project(write_project(tmp_path / "p", "csv1"))
    for n in (2, 3):
        sub = data.subset(range(n))
        train, test = train_test_split(sub, 0.2, seed=0)
        assert len(test) >= 1 and len(train) >= 1
        assert sorted(train + test) == list(range(n)) and not set(train) & set(test)
    big = data.subset([i % 3 for i in range(50)])  # 50 rows (repeats are fine for index splits)
    a = train_test_split(big, 0.2, seed=7)
    assert a == train_test_split(big, 0.2, seed=7)
    assert a != train_test_split(big, 0.2, seed=8)
    train, test = a
    assert len(test) == 10 and test == sorted(test) and train == sorted(train)
    assert sorted(train + test) == list(range(50)) and not set(train) & set(test)
    assert train_test_split(data.subset([0]), 0.2) == ([0], [])
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(data, 1.0)


def test_split_round_trip(tmp_path):
    data = load_dlc_project(write_project(tmp_path / "p", "csv1"))
    train, test = train_test_split(data, 0.34, seed=1)
    path = write_split(tmp_path / "out" / "split.json", data, train, test)
    doc = json.loads(path.read_text())
    assert doc["test"] == [data.names[i] for i in test]
    assert read_split(path, data) == (train, test)
    # A project loaded again (same frames) finds the same rows.
    assert read_split(path, load_dlc_project(tmp_path / "p")) == (train, test)


def test_split_with_unknown_names_is_an_error(tmp_path):
    data = load_dlc_project(write_project(tmp_path / "p", "csv1"))
    path = write_split(tmp_path / "split.json", data, [0, 1], [2])
    doc = json.loads(path.read_text())
    doc["test"].append("labeled-data/vidZ/img999.png")
    path.write_text(json.dumps(doc))
    with pytest.raises(DlcProjectError, match=r"split\.json.*'labeled-data/vidZ/img999\.png'"):
        read_split(path, data)


# ---------------------------------------------------------------------------------------------
# Left/right names and images


@pytest.mark.parametrize("names, pairs", [
    (["snout", "leftear", "rightear"], [("leftear", "rightear")]),
    (["left_ear", "nose", "right_ear"], [("left_ear", "right_ear")]),
    (["right_ear", "left_ear"], [("left_ear", "right_ear")]),
    (["earleft", "earright", "ear_left", "ear_right"], [("earleft", "earright"), ("ear_left", "ear_right")]),
    (["l_paw", "r_paw", "paw_l", "paw_r"], [("l_paw", "r_paw"), ("paw_l", "paw_r")]),
    (["LeftPaw", "RightPaw", "LEFT_EYE", "RIGHT_EYE"], [("LeftPaw", "RightPaw"), ("LEFT_EYE", "RIGHT_EYE")]),
    (["LPaw", "RPaw", "L_ear", "R_ear"], [("LPaw", "RPaw"), ("L_ear", "R_ear")]),
    (["front_left_paw", "front_right_paw"], [("front_left_paw", "front_right_paw")]),
    # Only pairs where both names exist; no pair for lookalikes.
    (["leftear", "snout", "Lens", "Rens", "l_paw", "tail_l", "cleft"], []),
    (["leftear", "rightpaw"], []),
])
def test_left_right_derivation(names, pairs):
    assert derive_left_right(names) == pairs


def test_load_image_channels(tmp_path):
    bgr = np.zeros((6, 10, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 200  # blue, green, red
    path = tmp_path / "c.png"
    cv2.imwrite(str(path), bgr)
    rgb = load_image(path, 3)
    assert rgb.shape == (6, 10, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [200, 20, 10]
    gray = load_image(path, 1)
    assert gray.shape == (6, 10) and gray.dtype == np.uint8
    expected = round(0.299 * 200 + 0.587 * 20 + 0.114 * 10)
    assert abs(int(gray[0, 0]) - expected) <= 1
    mono = tmp_path / "m.png"
    cv2.imwrite(str(mono), np.full((4, 5), 77, np.uint8))
    assert load_image(mono, 3).shape == (4, 5, 3) and (load_image(mono, 3) == 77).all()
    with pytest.raises(ValueError, match="channels"):
        load_image(path, 2)


# ---------------------------------------------------------------------------------------------
# The real project


@pytest.fixture(scope="module")
def openfield() -> LabeledData:
    if not (OPENFIELD / "config.yaml").is_file():
        pytest.skip(f"the openfield DeepLabCut project is not at {OPENFIELD} "
                    f"(../shared/data beside the repository)")
    return load_dlc_project(OPENFIELD)


def test_openfield_project(openfield):
    data = openfield
    assert len(data) == 93
    assert data.task == "openfield" and data.scorer == "Pranav"
    assert data.keypoints == ["snout", "leftear", "rightear", "tailbase"]
    assert data.left_right == [("leftear", "rightear")]
    assert data.skeleton == []
    assert data.names[0] == "labeled-data/m4s1/img0001.png"
    np.testing.assert_allclose(data.keypoints_px[0, 0], [10.248, 288.487], rtol=0, atol=1e-4)
    assert set(data.image_sizes) == {(640, 480)}
    assert all(p.is_file() for p in data.images)
    img = load_image(data.images[0], 1)
    assert img.shape == (480, 640) and img.dtype == np.uint8


def test_openfield_matches_csv(openfield):
    pd = pytest.importorskip("pandas")
    csv = OPENFIELD / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"
    df = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
    assert len(df) == len(openfield)
    assert int(df.isna().to_numpy().sum()) == int(np.isnan(openfield.keypoints_px).sum())
    expected = np.stack([df.xs((bp, c), axis=1, level=[1, 2]).to_numpy()[:, 0]
                         for bp in openfield.keypoints for c in ("x", "y")], axis=1)
    np.testing.assert_allclose(openfield.keypoints_px.reshape(len(df), -1), expected, rtol=1e-6)
    assert [f"{i}" for i in df.index] == openfield.names


def test_openfield_split(openfield, tmp_path):
    train, test = train_test_split(openfield, 0.2, seed=0)
    assert len(test) == 19 and len(train) == 74
    path = write_split(tmp_path / "split.json", openfield, train, test)
    assert read_split(path, openfield) == (train, test)


def test_windows_paths_in_index(tmp_path):
    """Projects labeled on Windows with older DeepLabCut store ``labeled-data\\<video>\\<img>``."""
    root = write_project(tmp_path / "p", "csv1")
    for csv in root.glob("labeled-data/*/CollectedData_Tester.csv"):
        csv.write_text(csv.read_text().replace("labeled-data/", "labeled-data\\").replace(
            "/img", "\\img"))
    assert "\\" in (root / "labeled-data" / "vidA" / "CollectedData_Tester.csv").read_text()
    data = load_dlc_project(root)
    assert data.names == [f"labeled-data/{v}/{img}" for v, img, *_ in SYNTH_IMAGES]
    np.testing.assert_array_equal(data.keypoints_px, SYNTH_PX.astype(np.float32))
