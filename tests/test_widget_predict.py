import json

import numpy as np
import pytest

WIDGET = "Predict organelles"
STACK = "image_1 BF (z-stack)"
TIMEOUT_MS = 30_000


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-lightmycells", WIDGET)
    widget.device.value = "cpu"
    widget.tile_size.value = 64
    widget.batch_size.value = 8
    return viewer, widget


def predict(qtbot, widget):
    widget.predict_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_predicts_sample_into_coloured_aligned_layer(viewer_and_widget, tiny_checkpoint, qtbot):
    viewer, widget = viewer_and_widget
    viewer.open_sample("napari-lightmycells", "synthetic_case")
    widget.image.value = viewer.layers[STACK]
    assert widget.modality.value == "BF" and not widget.plane.native.isHidden()
    widget.rows["Nucleus"].file.value = tiny_checkpoint

    predict(qtbot, widget)
    nucleus = viewer.layers[f"{STACK} Nucleus"]
    assert nucleus.data.shape == (256, 256) and nucleus.data.dtype == np.float32
    assert tuple(nucleus.scale) == pytest.approx((0.325, 0.325))
    assert nucleus.colormap.name == "blue" and nucleus.blending == "additive"
    assert nucleus.metadata["plane"] == 2  # best focus of the sample
    assert widget.status.value == "Predicted Nucleus (plane 2)"


def test_predicts_all_planes_of_an_opened_stack_for_two_organelles(
    viewer_and_widget, synthetic_study, tiny_checkpoint, qtbot, notifications
):
    viewer, widget = viewer_and_widget
    viewer.open(str(synthetic_study), plugin="napari-lightmycells")
    widget.image.value = viewer.layers[STACK]
    widget.plane.value = "all planes"
    for organelle in ("Nucleus", "Actin"):
        widget.rows[organelle].selected.value = True
        widget.rows[organelle].file.value = tiny_checkpoint

    predict(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names == [STACK, "image_1 Nucleus", f"{STACK} Nucleus", f"{STACK} Actin"]
    actin = viewer.layers[f"{STACK} Actin"]
    assert actin.data.shape == (3, 96, 96) and actin.colormap.name == "red"
    assert tuple(actin.scale) == pytest.approx((1.0, 0.325, 0.325))
    assert any(
        n.severity == "warning" and "trained for Nucleus but is used for Actin" in n.message
        for n in notifications
    )


def test_cancel_stops_the_worker(viewer_and_widget, tiny_checkpoint, qtbot):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(0).random((2048, 2048), np.float32), name="big")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    widget.start()
    qtbot.waitUntil(lambda: "tile" in widget.progress.native.text(), timeout=TIMEOUT_MS)  # ~1400 tiles
    widget.cancel_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5_000)
    assert widget.status.value == "Cancelled (finished tiles kept)"
    kept = viewer.layers["big Nucleus"].data  # the finished tiles stay on screen
    assert 0 < np.count_nonzero(kept) < kept.size
    assert widget.predict_button.enabled and not widget.cancel_button.enabled


def test_bad_inputs_become_error_notifications(
    viewer_and_widget, tiny_checkpoint, tmp_path, qtbot, notifications
):
    viewer, widget = viewer_and_widget
    nucleus = widget.rows["Nucleus"]

    def error_after_predict(layer=None):
        notifications.clear()
        if layer is not None:
            widget.image.value = layer
        predict(qtbot, widget)
        [notification] = notifications
        assert notification.severity == "error"
        return notification.message

    assert "No image layer" in error_after_predict()
    gray = viewer.add_image(np.random.rand(32, 32), name="gray")
    assert "No Nucleus model chosen" in error_after_predict(gray)
    nucleus.file.value = tiny_checkpoint
    assert "RGB" in error_after_predict(viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True))
    assert "4 dimensions" in error_after_predict(viewer.add_image(np.random.rand(2, 2, 32, 32)))
    nucleus.selected.value = False
    assert "No organelle selected" in error_after_predict(gray)
    nucleus.selected.value = True
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    nucleus.file.value = garbage
    assert "not a readable model checkpoint" in error_after_predict(gray)  # raised in the worker
    assert widget.status.value == "Prediction failed"


def test_public_model_is_downloaded_then_used(
    make_napari_viewer, model_server, tmp_path, monkeypatch, qtbot, notifications
):
    registry = tmp_path / "models.json"
    entry = {
        "name": "tiny-nucleus-pc",
        "organelle": "Nucleus",
        "modality": ["PC"],
        "url": model_server.url,
        "sha256": model_server.sha,
        "licence": "CC-BY 4.0",
    }
    registry.write_text(json.dumps([entry]))
    monkeypatch.setenv("LIGHTMYCELLS_REGISTRY", str(registry))
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-lightmycells", WIDGET)
    widget.tile_size.value = 64
    viewer.add_image(np.random.rand(64, 64), name="cells", metadata={"modality": "BF"})

    assert "licence: CC-BY 4.0" in widget.rows["Nucleus"].source.tooltip
    widget.rows["Nucleus"].source.value = "tiny-nucleus-pc"
    assert widget.rows["Nucleus"].file.native.isHidden()
    qtbot.waitUntil(lambda: widget.status.value == "Downloaded tiny-nucleus-pc", timeout=TIMEOUT_MS)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tiny-nucleus-pc.pt"]

    for _ in range(2):  # predicting again replaces the layer
        predict(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells Nucleus"]
    assert viewer.layers["cells Nucleus"].data.shape == (64, 64)
    assert any(n.severity == "warning" and "trained on PC" in n.message for n in notifications)


def test_drive_download_shows_its_checksum_and_cancels_from_the_activity_dock(
    make_napari_viewer, model_server, tmp_path, monkeypatch, qtbot, notifications
):
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps(
            [
                {"name": "drive-actin", "organelle": "Actin", "drive_id": model_server.drive_id},
                {"name": "slow-actin", "organelle": "Actin", "url": f"{model_server.base}/slow"},
            ]
        )
    )
    monkeypatch.setenv("LIGHTMYCELLS_REGISTRY", str(registry))
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", f"{model_server.base}/uc")
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-lightmycells", WIDGET)

    widget.rows["Actin"].source.value = "drive-actin"  # Drive's confirmation page, then trust on first use
    qtbot.waitUntil(lambda: widget.status.value == "Downloaded drive-actin", timeout=TIMEOUT_MS)
    assert any(n.severity == "info" and model_server.sha in n.message for n in notifications)

    widget.rows["Actin"].source.value = "slow-actin"

    def bars():
        """The activity dock's progress bars of that download."""
        return [
            b
            for b in viewer.window._qt_window.findChildren(QtLabeledProgressBar)
            if b.progress is not None and b.progress.desc == "Downloading slow-actin"
        ]

    qtbot.waitUntil(lambda: bars() and bars()[0].progress.n > 0, timeout=TIMEOUT_MS)
    assert not bars()[0].cancel_button.isHidden()
    bars()[0].cancel_button.click()
    model_server.release.set()  # the server sends the rest; the next chunk stops the download
    qtbot.waitUntil(lambda: widget.status.value == "Download of slow-actin cancelled", timeout=TIMEOUT_MS)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "drive-actin.pth",
        "drive-actin.pth.sha256",
    ]
    assert not any(n.severity == "error" for n in notifications)


def test_closing_the_viewer_stops_a_running_prediction(viewer_and_widget, tiny_checkpoint, qtbot):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(0).random((2048, 2048), np.float32), name="big")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    widget.start()
    qtbot.waitUntil(lambda: "tile" in widget.progress.native.text(), timeout=TIMEOUT_MS)
    worker = widget.worker
    with qtbot.waitSignal(worker.finished, timeout=5_000):
        viewer.close()


def test_exports_a_bioimageio_package_and_predicts_from_it(
    viewer_and_widget, tiny_checkpoint, tmp_path, qtbot, notifications
):
    pytest.importorskip("bioimageio.spec")
    viewer, widget = viewer_and_widget
    viewer.open_sample("napari-lightmycells", "synthetic_case")
    widget.image.value = viewer.layers[STACK]
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    predict(qtbot, widget)
    from_checkpoint = np.array(viewer.layers[f"{STACK} Nucleus"].data)

    package = tmp_path / "nucleus.zip"
    widget.export_path.value = package
    widget.export_button.clicked()
    qtbot.waitUntil(lambda: widget.export_button.enabled and package.is_file(), timeout=TIMEOUT_MS)
    assert widget.status.value == "Exported nucleus.zip"

    widget.rows["Nucleus"].file.value = package
    predict(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers[f"{STACK} Nucleus"].data, from_checkpoint)


def test_export_without_destination_is_a_notification(viewer_and_widget, tiny_checkpoint, notifications):
    _, widget = viewer_and_widget
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    widget.export_path.value = None
    widget.export_button.clicked()
    assert any("Choose where to write the bioimage.io package" in n.message for n in notifications)


def test_fp16_on_cpu_is_refused_with_a_notification(viewer_and_widget, tiny_checkpoint, qtbot, notifications):
    viewer, widget = viewer_and_widget
    viewer.open_sample("napari-lightmycells", "synthetic_case")
    widget.image.value = viewer.layers[STACK]
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    widget.precision.value = "fp16"
    predict(qtbot, widget)
    assert any("fp16 needs a CUDA GPU" in n.message for n in notifications)
    assert f"{STACK} Nucleus" not in viewer.layers


def test_output_layer_fills_from_the_view_centre_and_cancel_keeps_it(
    viewer_and_widget, tiny_checkpoint, qtbot
):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(1).random((1024, 1024), np.float32), name="cells")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    viewer.scene.camera.center = (0, 1000, 1000)  # looking at the bottom-right corner
    widget.start()
    layer = viewer.layers["cells Nucleus"]  # there at once, filled by the worker as tiles finish
    qtbot.waitUntil(lambda: layer.data.any(), timeout=TIMEOUT_MS)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5_000)
    assert layer.data[-32:, -32:].all() and not layer.data[:64, :64].any()  # the view's tiles came first


def test_multiscale_and_dask_layers_predict_like_numpy(viewer_and_widget, tiny_checkpoint, qtbot):
    da = pytest.importorskip("dask.array")
    viewer, widget = viewer_and_widget
    image = np.random.default_rng(2).random((200, 180), np.float32)
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    results = {}
    for name, data, multiscale in [
        ("plain", image, False),
        ("pyramid", [image, image[::2, ::2]], True),
        ("lazy", da.from_array(image, chunks=64), False),
    ]:
        widget.image.value = viewer.add_image(data, name=name, multiscale=multiscale)
        predict(qtbot, widget)
        results[name] = np.asarray(viewer.layers[f"{name} Nucleus"].data)
    assert results["plain"].shape == image.shape and results["plain"].any()
    np.testing.assert_allclose(results["pyramid"], results["plain"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results["lazy"], results["plain"], rtol=1e-5, atol=1e-5)


def test_models_stay_loaded_between_predictions_until_released(viewer_and_widget, tiny_checkpoint, qtbot):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(3).random((64, 64), np.float32), name="cells")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    predict(qtbot, widget)
    loaded = widget.models.load(tiny_checkpoint, "cpu", "auto")
    predict(qtbot, widget)
    assert len(widget.models) == 1  # reused, not reloaded
    assert widget.models.load(tiny_checkpoint, "cpu", "auto") is loaded
    widget.release_button.clicked()
    assert len(widget.models) == 0 and widget.status.value == "Released 1 model(s)"


def test_worker_signals_during_start_wait_until_the_output_layer_exists(
    viewer_and_widget, tiny_checkpoint, qtbot, monkeypatch
):
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(4).random((64, 64), np.float32), name="cells")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    add_layer = widget._output_layer

    def add_layer_after_the_worker(organelle, data):  # napari processes Qt events while adding a layer
        QThreadPool.globalInstance().waitForDone(TIMEOUT_MS)
        QApplication.processEvents()  # the worker's signals, all sent by now
        return add_layer(organelle, data)

    monkeypatch.setattr(widget, "_output_layer", add_layer_after_the_worker)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    layer = viewer.layers["cells Nucleus"]
    assert widget.status.value == "Predicted Nucleus" and widget.progress.value == widget.progress.max
    assert layer.data.any() and layer.contrast_limits != [0.0, 1.0]
    assert widget.predict_button.enabled and not widget.cancel_button.enabled


def test_the_view_centre_tile_is_shown_first_alone_with_contrast_limits_from_it(
    viewer_and_widget, tiny_checkpoint, qtbot, monkeypatch
):
    from napari_lightmycells.widgets.predict import display_range

    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(5).random((512, 512), np.float32), name="cells")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    widget.batch_size.value = 32  # the next batch takes a while: nothing else is written meanwhile
    viewer.scene.camera.center = (0, 500, 20)  # looking at the bottom-left corner
    shown = []

    def first_tiles(organelle, region):
        layer = widget._layers[organelle]
        if not shown:
            widget.cancel()
            shown.append((region, np.count_nonzero(layer.data), layer.contrast_limits))
        on_tiles(organelle, region)
        if len(shown) == 1:
            shown.append((layer.contrast_limits, display_range(layer.data[region])))

    on_tiles = widget._on_tiles
    monkeypatch.setattr(widget, "_on_tiles", first_tiles)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    (rows, columns), nonzero, before = shown[0]
    assert rows.stop == 512 and columns.start == 0  # the view's corner...
    assert rows.stop - rows.start <= 80 and columns.stop - columns.start <= 80  # ...one tile of 64-80 px
    assert nonzero == (rows.stop - rows.start) * (columns.stop - columns.start)  # ...and nothing else yet
    limits, from_tile = shown[1]
    assert before == [0.0, 1.0] and limits == pytest.approx(from_tile)


def test_progress_shows_in_the_widget_bar_never_busy_and_not_in_the_activity_dock(
    viewer_and_widget, tiny_checkpoint, qtbot
):
    from napari.utils import progress

    from napari_lightmycells.inference.predictor import Predictor

    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(6).random((200, 180), np.float32), name="cells")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    activity = set(progress._all_instances)
    widget.start()
    assert not set(progress._all_instances) - activity  # napari's dock animates while a task is listed
    assert widget.progress.max >= 1 and widget.progress.value == 0  # a busy bar would animate too
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    tiles = Predictor({"Nucleus": tiny_checkpoint}, "cpu", tile_size=64).tile_grid((200, 180), "Nucleus")
    assert widget.progress.max == widget.progress.value == len(tiles) > 1


def test_tiles_and_tile_counts_are_shown_together_at_most_every_refresh_period(
    viewer_and_widget, tiny_checkpoint, qtbot, monkeypatch
):
    from napari_lightmycells.widgets import predict as predict_module

    viewer, widget = viewer_and_widget
    viewer.add_image(np.random.default_rng(7).random((200, 180), np.float32), name="cells")
    widget.rows["Nucleus"].file.value = tiny_checkpoint
    widget.batch_size.value = 1
    monkeypatch.setattr(predict_module, "REFRESH_S", 3600.0)  # nothing but the first tile until the end
    uploaded, statuses = [], set()
    upload = predict_module.upload_region
    monkeypatch.setattr(
        predict_module, "upload_region", lambda *args: uploaded.append(args[2]) or upload(*args)
    )
    widget.start()
    qtbot.waitUntil(lambda: statuses.add(widget.status.value) or widget.worker is None, timeout=TIMEOUT_MS)
    layer = viewer.layers["cells Nucleus"]
    assert len(uploaded) == 1 and np.count_nonzero(layer.data) == layer.data.size  # first tile, then the end
    assert not any("tile" in status for status in statuses)  # a label changing size relayouts the window
    assert widget.status.value == "Predicted Nucleus"
    tiles = widget.progress.max
    assert tiles > 1 and widget.progress.native.text().startswith(f"Nucleus: tile {tiles}/{tiles}")
