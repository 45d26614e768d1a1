"""tudui: train image classifiers with PyTorch from one command.

    import tudui
    result = tudui.train(data="digits", epochs=5)
    tudui.evaluate(result.best_weights)
    tudui.predict("my_digit.png", weights=result.run_dir)
    tudui.export_model(result.run_dir, format="onnx")
"""
from tudui._version import __version__
from tudui.errors import TuduiError
from tudui.evaluation import evaluate
from tudui.export import export_model
from tudui.models import create_model, list_models, register_model
from tudui.predict import predict
from tudui.runner import TrainResult, train

__all__ = ["__version__", "TuduiError", "create_model", "list_models", "register_model",
           "predict", "train", "evaluate", "export_model", "TrainResult"]
