"""tudui: train image classifiers with PyTorch from one command.

    import tudui
    result = tudui.train(data="digits", epochs=5)
    tudui.evaluate(result.best_weights)
    tudui.predict("my_digit.png", weights=result.run_dir)
"""
__version__ = "0.1.0"

from tudui.errors import TuduiError  # noqa: E402
from tudui.models import create_model, list_models, register_model  # noqa: E402
from tudui.predict import predict  # noqa: E402
from tudui.evaluation import evaluate  # noqa: E402
from tudui.runner import TrainResult, train  # noqa: E402

__all__ = ["__version__", "TuduiError", "create_model", "list_models", "register_model",
           "predict", "train", "evaluate", "TrainResult"]
