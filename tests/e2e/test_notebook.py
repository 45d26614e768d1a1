"""examples/course.ipynb runs from top to bottom in a fresh kernel, shows its pictures inline, and is
kept in git without outputs."""
import base64
import io

import nbformat
import pytest
from PIL import Image

from helpers import REPO

NOTEBOOK = REPO / "examples" / "course.ipynb"


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_course_notebook_runs_and_shows_the_curves_and_confusion_matrix(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason='pip install -e ".[test]" installs nbclient and ipykernel')
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    pictures = {}
    for cell in code:
        assert not [out for out in cell.outputs if out.output_type == "error"], cell.source
        for out in cell.outputs:
            if "image/png" in out.get("data", {}):
                pictures[cell.source] = Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"])))
    confusion = next(image for source, image in pictures.items() if "confusion_matrix.png" in source)
    curves = next(image for source, image in pictures.items() if "curves.png" in source)
    assert confusion.width > 600 and curves.width > 600
    assert len(confusion.convert("L").getcolors(maxcolors=256)) > 20   # a drawn figure, not a blank
    last = "".join(out.get("text", "") for out in code[-1].outputs)
    by_hand, predicted = last.split("by hand:")[1].split("tudui.predict:")
    assert by_hand.strip() == predicted.strip()   # the plain nn.Module agrees with tudui.predict
    assert (tmp_path / "runs" / "notebook" / "weights" / "best.safetensors").is_file()
