"""The tudui package: its names load when first used, and stay what they are named."""
import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_tudui_does_not_import_torch():
    assert run("import sys, tudui; print('torch' in sys.modules)") == "False"


def test_the_names_are_the_functions_even_after_their_modules_are_imported():
    code = ("import tudui.prediction, tudui.evaluation, tudui.runner, tudui.export, tudui\n"
            "print(tudui.predict.__module__, tudui.evaluate.__module__, tudui.train.__module__,"
            " tudui.export_model.__module__, callable(tudui.serve.create_app))")
    assert run(code) == "tudui.prediction tudui.evaluation tudui.runner tudui.export True"


def test_dir_lists_the_lazy_names():
    names = run("import tudui; print(' '.join(dir(tudui)))").split()
    assert {"train", "evaluate", "predict", "export_model", "create_model", "serve", "__version__"} <= set(names)
