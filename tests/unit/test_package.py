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


def test_dir_lists_the_public_names_and_no_plumbing():
    names = run("import tudui; print(' '.join(dir(tudui)))").split()
    assert {"train", "evaluate", "predict", "export_model", "create_model", "serve", "__version__"} <= set(names)
    assert not {"_LAZY", "SUBPACKAGES", "importlib", "annotations"} & set(names)


def test_a_training_run_loads_scikit_learn_only_to_draw_its_report(tmp_path):
    code = ("import sys, tudui\n"
            "tudui.train(data='synthetic', epochs=1, report=False, progress=False, project=sys.argv[1])\n"
            "print('sklearn' in sys.modules)\n"
            "tudui.train(data='synthetic', epochs=1, report=True, progress=False, project=sys.argv[1])\n"
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-2:] == ["False", "True"]   # 0.9 s of imports saved by every run without a report
