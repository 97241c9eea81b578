from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.data.io import read_image, write_ome_tiff
from napari_lightmycells.errors import DataError, ModelError, StopRequested
from napari_lightmycells.events import StopToken
from napari_lightmycells.inference.cache import ModelCache
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.tiling import DEFAULT_OVERLAP, plan_tiles
from napari_lightmycells.models import create_model


class StandIn(nn.Module):
    """Fully convolutional stand-in: ``gain * x + offset``; fails on inputs not a multiple of the token."""

    def __init__(
        self, token_size: int = 16, gain: float = 1.0, offset: float = 0.0, max_pixels: int | None = None
    ):
        super().__init__()
        self.token_size = token_size
        self.gain, self.offset, self.max_pixels = gain, offset, max_pixels
        self.calls: list[tuple[int, ...]] = []
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == 1
        assert x.shape[-2] % self.token_size == 0 and x.shape[-1] % self.token_size == 0
        self.calls.append(tuple(x.shape))
        if self.max_pixels is not None and x.numel() > self.max_pixels:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * self.scale * self.gain + self.offset


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (gaussian_filter(rng.normal(size=(150, 170)), 2) * 40 + 500).astype(np.uint16)


def test_identity_model_returns_the_input_intensities(image):
    predictor = Predictor({"nucleus": StandIn()}, device="cpu", tile_size=64, batch_size=2)
    prediction = predictor.predict(image)
    assert list(prediction) == ["Nucleus"]
    assert prediction["Nucleus"].dtype == np.float32 and prediction["Nucleus"].shape == image.shape
    np.testing.assert_allclose(prediction["Nucleus"], image, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["zscore", "percentile"])
def test_output_is_denormalised_with_the_input_statistics(image, normalization):
    predictor = Predictor(
        {"Actin": StandIn(offset=1.0)}, device="cpu", tile_size=64, normalization=normalization
    )
    values = image.astype(np.float64)
    if normalization == "zscore":
        expected = values + values.std()  # model adds 1 in normalised units
    else:
        low, high = np.percentile(values, [2, 99.8])  # the challenge's percentiles
        expected = values + (high - low)
    np.testing.assert_allclose(predictor.predict(image)["Actin"], expected, rtol=1e-4)


def test_several_organelles(image):
    models = {
        "Nucleus": StandIn(gain=1.0),
        "mito": StandIn(gain=-1.0),
        "Tubulin": StandIn(token_size=32, gain=2.0),
    }
    predictions = Predictor(models, device="cpu", tile_size=80).predict(image)
    assert list(predictions) == ["Nucleus", "Mitochondria", "Tubulin"]
    mean = image.mean()
    np.testing.assert_allclose(predictions["Mitochondria"], 2 * mean - image, rtol=1e-4)
    np.testing.assert_allclose(predictions["Tubulin"] - mean, 2 * (image - mean), rtol=1e-4, atol=1e-2)
    assert {call[-1] for call in models["Tubulin"].calls} == {64}  # 80 rounded down to the token multiple


def test_z_stack_plane_modes(image):
    sharp = image.astype(np.float32)
    stack = np.stack([gaussian_filter(sharp, 4), sharp, gaussian_filter(sharp, 2)])
    predictor = Predictor({"Nucleus": StandIn()}, device="cpu", tile_size=64, batch_size=4)
    best = predictor.predict(stack, plane="best")["Nucleus"]
    np.testing.assert_allclose(best, sharp, rtol=1e-5)
    np.testing.assert_allclose(predictor.predict(stack, plane=2)["Nucleus"], stack[2], rtol=1e-5)
    np.testing.assert_allclose(predictor.predict(stack, plane=-3)["Nucleus"], stack[0], rtol=1e-5)
    every = predictor.predict(stack, plane="all")["Nucleus"]
    assert every.shape == stack.shape
    np.testing.assert_allclose(every, stack, rtol=1e-5)
    assert predictor.predict(image, plane="all")["Nucleus"].shape == image.shape  # 2D stays 2D
    with pytest.raises(DataError, match="3 planes"):
        predictor.predict(stack, plane=3)
    with pytest.raises(DataError, match="Unknown plane"):
        predictor.predict(stack, plane="middle")


def test_progress_events_and_tile_counts(image):
    events = []
    predictor = Predictor(
        {"Nucleus": StandIn(), "Actin": StandIn()}, device="cpu", tile_size=64, batch_size=3
    )
    predictor.predict(image, callbacks=[events.append])
    tiles = len(plan_tiles(image.shape, 64, 16, DEFAULT_OVERLAP))
    steps = [e for e in events if e.kind == "step"]
    assert events[0].kind == "start" and events[-1].kind == "done"
    assert all(e.task == "predict" and e.total == 2 * tiles for e in events)
    assert len(steps) == 2 * -(-tiles // 3)
    assert [e.step for e in steps] == sorted(e.step for e in steps)
    assert steps[-1].step == 2 * tiles


def test_stop_token_interrupts_between_batches(image):
    stop = StopToken()
    model = StandIn()
    predictor = Predictor({"Nucleus": model}, device="cpu", tile_size=64, batch_size=1)
    with pytest.raises(StopRequested):
        predictor.predict(
            image, callbacks=[lambda e: stop.request() if e.kind == "step" else None], stop=stop
        )
    assert len(model.calls) == 1


def test_out_of_memory_halves_batch_then_tile(image):
    model = StandIn(token_size=16, max_pixels=32 * 32)
    events = []
    predictor = Predictor({"Nucleus": model}, device="cpu", tile_size=64, overlap=0.125, batch_size=4)
    prediction = predictor.predict(image, callbacks=[events.append])["Nucleus"]
    np.testing.assert_allclose(prediction, image, rtol=1e-5)
    assert (predictor.batch_size, predictor.tile_size) == (1, 32)
    failed = [shape for shape in model.calls if np.prod(shape) > 32 * 32]
    assert failed == [(4, 1, 64, 64), (2, 1, 64, 64), (1, 1, 64, 64)]
    assert events[-1].step == events[-1].total == len(plan_tiles(image.shape, 32, 16, 0.125))


def test_out_of_memory_at_the_smallest_tile_is_a_model_error(image):
    predictor = Predictor({"Nucleus": StandIn(token_size=16, max_pixels=100)}, device="cpu", tile_size=32)
    with pytest.raises(ModelError, match="Out of memory.*cpu"):
        predictor.predict(image)


def test_other_runtime_errors_are_not_retried(image):
    class Broken(StandIn):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        Predictor({"Nucleus": Broken()}, device="cpu", tile_size=32).predict(image)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 3, 40, 40)), "2D image"),
        (np.full((40, 40), 7.0), "constant"),
        (np.where(np.eye(40) > 0, np.nan, 1.0), "NaN"),
        (np.zeros((0, 40)), "empty"),
        (np.ones((40, 40), dtype=bool), "pixel type"),
    ],
)
def test_bad_input_raises_data_error(bad, match):
    with pytest.raises(DataError, match=match):
        Predictor({"Nucleus": StandIn()}, device="cpu", tile_size=32).predict(bad)


def test_bad_models_raise_model_error():
    with pytest.raises(ModelError, match="Unknown organelle"):
        Predictor({"Golgi": StandIn()}, device="cpu")
    with pytest.raises(ModelError, match="token_size"):
        Predictor({"Nucleus": nn.Conv2d(1, 1, 3)}, device="cpu")
    with pytest.raises(ModelError, match="No model"):
        Predictor({}, device="cpu")


def test_predict_files_writes_ome_tiffs_and_reports_every_file(tmp_path, image):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_ome_tiff(inputs / "cell_BF.ome.tiff", image, pixel_size=(0.2, 0.25))
    write_ome_tiff(
        inputs / "stack.ome.tiff", np.stack([image, image[::-1]]), pixel_size=(0.5, 0.5), z_step=1.0
    )
    (inputs / "broken.tif").write_bytes(b"not a tiff")
    (inputs / "notes.txt").write_text("hello")
    predictor = Predictor({"Nucleus": StandIn(), "Actin": StandIn(gain=0.5)}, device="cpu", tile_size=64)
    with pytest.raises(DataError, match="Input not found: .*missing.tif"):  # before anything is computed
        predictor.predict_files([inputs, tmp_path / "missing.tif"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    results = predictor.predict_files([inputs], tmp_path / "out")
    status = {r.file.name: r.status for r in results}
    assert status == {
        "broken.tif": "error",
        "cell_BF.ome.tiff": "ok",
        "notes.txt": "skipped",
        "stack.ome.tiff": "ok",
    }
    messages = {r.file.name: r.message for r in results}
    assert "broken.tif" in messages["broken.tif"]
    written = read_image(tmp_path / "out" / "cell_BF_Nucleus.ome.tiff")
    assert written.data.dtype == np.float32 and written.pixel_size == pytest.approx((0.2, 0.25))
    np.testing.assert_allclose(written.data, image, rtol=1e-5)
    assert (tmp_path / "out" / "stack_Actin.ome.tiff").is_file()
    assert sorted(p.name for r in results for p in r.outputs) == sorted(
        f"{stem}_{o}.ome.tiff" for stem in ("cell_BF", "stack") for o in ("Nucleus", "Actin")
    )


def test_predict_files_reports_one_job_over_all_inputs_and_tiles(tmp_path, image):
    write_ome_tiff(tmp_path / "a.tif", image)
    write_ome_tiff(tmp_path / "b.tif", np.stack([image, image, image]), z_step=1.0)
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    events = []
    predictor = Predictor({"Nucleus": StandIn(), "Actin": StandIn()}, device="cpu", tile_size=64)
    inputs = [tmp_path / name for name in ("a.tif", "b.tif", "broken.tif")]
    predictor.predict_files(inputs, tmp_path / "out", plane="all", callbacks=[events.append])
    tiles = len(plan_tiles(image.shape, 64, 16, DEFAULT_OVERLAP))
    total = 2 * tiles + 3 * 2 * tiles  # a: 1 plane, b: 3 planes, 2 organelles; broken.tif: none
    assert [e.kind for e in events if e.kind != "step"] == ["start", "log", "log", "log", "done"]
    assert events[0].total == total and "3 input(s)" in events[0].message
    steps = [e.step for e in events if e.kind == "step"]
    assert steps == sorted(steps) and steps[-1] == total and len(steps) == 8 * tiles
    logs = [e for e in events if e.kind == "log"]
    assert [Path(e.path).name for e in logs] == ["a.tif", "b.tif", "broken.tif"]
    assert logs[0].message.startswith("ok ") and logs[2].message.startswith("error ")


def test_predict_files_propagates_a_stop_request(tmp_path, image):
    write_ome_tiff(tmp_path / "a.tif", image)
    stop = StopToken()
    stop.request()
    with pytest.raises(StopRequested):
        Predictor({"Nucleus": StandIn()}, device="cpu", tile_size=64).predict_files(
            [tmp_path / "a.tif"], tmp_path, stop=stop
        )


def test_tiny_unetr_from_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("unetr_tiny")
    path = save_checkpoint(tmp_path / "nucleus.pt", model, organelle="Nucleus", normalization="percentile")
    predictor = Predictor({"Nucleus": path}, device="cpu", tile_size=64, overlap=0.25, batch_size=4)
    assert predictor.models["Nucleus"].normalization == "percentile"
    rng = np.random.default_rng(3)
    for shape in [(37, 41), (130, 200)]:
        prediction = predictor.predict(rng.random(shape).astype(np.float32))["Nucleus"]
        assert prediction.shape == shape and np.isfinite(prediction).all()
    # tiled prediction with a real UNETR stays close to one whole-image forward where both fit
    image = rng.random((128, 128)).astype(np.float32)
    tiled = Predictor({"Nucleus": model}, device="cpu", tile_size=128).predict(image)["Nucleus"]
    normalised = (image - image.mean()) / image.std()
    with torch.inference_mode():
        whole = model.eval()(torch.from_numpy(normalised)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(tiled, whole * image.std() + image.mean(), rtol=1e-4, atol=1e-4)


def test_bf16_precision_on_cpu_stays_close_to_fp32():
    from napari_lightmycells.models import create_model

    torch.manual_seed(0)
    model = create_model("unetr_tiny").eval()
    image = np.random.default_rng(0).normal(100, 10, (96, 80)).astype(np.float32)
    exact = Predictor({"Nucleus": model}, device="cpu", tile_size=64).predict(image)["Nucleus"]
    fast = Predictor({"Nucleus": model}, device="cpu", tile_size=64, precision="bf16").predict(image)[
        "Nucleus"
    ]
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    spread = exact.max() - exact.min()
    assert 0 < np.abs(fast - exact).max() < 0.05 * spread


def test_lazy_and_multiscale_inputs_match_the_in_memory_prediction(tmp_path):
    zarr = pytest.importorskip("zarr")
    torch.manual_seed(0)
    predictor = Predictor({"Nucleus": create_model("unetr_tiny")}, device="cpu", tile_size=64, batch_size=4)
    rng = np.random.default_rng(4)
    stack = (gaussian_filter(rng.normal(size=(2, 200, 230)), (0, 2, 2)) * 50 + 300).astype(np.uint16)
    lazy = zarr.create_array(
        store=tmp_path / "in.zarr", shape=stack.shape, chunks=(1, 64, 64), dtype="uint16"
    )
    lazy[:] = stack
    expected = predictor.predict(stack, plane="all")["Nucleus"]
    out = zarr.create_array(
        store=tmp_path / "out.zarr", shape=stack.shape, chunks=(1, 64, 64), dtype="float32"
    )
    written = predictor.predict(lazy, plane="all", out={"Nucleus": out})["Nucleus"]
    assert written is out
    np.testing.assert_allclose(out[:], expected, rtol=1e-5, atol=1e-3)  # small planes: exact statistics
    levels = [stack[1], stack[1, ::2, ::2], stack[1, ::4, ::4]]  # a multiscale layer predicts its first level
    np.testing.assert_allclose(predictor.predict(levels)["Nucleus"], expected[1], rtol=1e-2, atol=1.0)


def test_step_events_say_which_region_of_which_output_is_done(image):
    events = []
    predictor = Predictor({"Nucleus": StandIn()}, device="cpu", tile_size=64, tile_growth=1.0)
    out = {"Nucleus": np.zeros(image.shape, np.float32)}
    predictor.predict(image, callbacks=[events.append], out=out, focus=(149, 169))
    steps = [e for e in events if e.kind == "step"]
    assert all(e.output == "Nucleus" for e in steps)
    first = steps[0].region
    assert (first[0].stop, first[1].stop) == image.shape  # the tile at the focus (bottom right) came first
    covered = np.zeros(image.shape, bool)
    for event in steps:
        covered[event.region] = True
    assert covered.all()


def test_model_cache_loads_each_file_version_once(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "nucleus.pt", create_model("unetr_tiny"), organelle="Nucleus")
    cache = ModelCache()
    first = Predictor({"Nucleus": path}, device="cpu", cache=cache).models["Nucleus"].model
    assert Predictor({"Nucleus": path}, device="cpu", cache=cache).models["Nucleus"].model is first
    assert cache.load(path, "cpu", "bf16")[0] is not first and len(cache) == 2  # precision is part of the key
    save_checkpoint(path, create_model("unetr_tiny"), organelle="Nucleus")  # the file changed: reloaded
    assert Predictor({"Nucleus": path}, device="cpu", cache=cache).models["Nucleus"].model is not first
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
