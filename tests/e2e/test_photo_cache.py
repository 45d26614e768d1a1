"""A training on a folder of photos above 64 px goes through the photo preset's tensor path."""
import numpy as np
import pytest
from PIL import Image

import tudui


def write_photos(root, classes=("a", "b", "c"), per_class=8, size=(200, 150), seed=0):
    """root/<class>/<i>.jpg: 200x150 noisy photos with a block in the class's colour."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)
            array[20:100, 30:120, k] = 220
            Image.fromarray(array).save(root / name / f"{i:02d}.jpg", quality=90)
    return root


def test_photos_train_on_the_resized_crop_tensor_path_and_eval_agrees(tmp_path, capsys):
    folder = write_photos(tmp_path / "photos")
    # fastnet: its whitening is initialised from the loader's samples, as whole images at 96 px
    result = tudui.train(data=str(folder), model="fastnet", widths="16,32,32", input_size=96, epochs=1, batch_size=8,
                         val_split=0.25,
                         project=str(tmp_path / "runs"), progress=None, report=False)
    first_lines = capsys.readouterr().out.splitlines()[:6]
    assert any("augment resized-crop-flip" in line for line in first_lines)
    assert any("loader: tensor (decoded once at 192 px, resized crops on cpu)" in line for line in first_lines)
    assert np.isfinite(result.history[0]["train_loss"])
    # tudui eval reads the photos through the PIL eval pipeline: the same numbers as the run's val split
    assert tudui.evaluate(result.run_dir, report=False)["accuracy"] == pytest.approx(result.history[0]["val_accuracy"])
