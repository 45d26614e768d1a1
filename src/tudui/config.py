"""Settings of a training run as frozen dataclasses: each with its default, help, flag and rule.

Each field carries its help text, its flag (when the flag is not `--field-name`) and the rule
its value must follow (see tudui.settings), so the command line is generated from this file and
every default and check is written once. Training's precedence is dataclass default < YAML file
(tudui.config_files) < flag; `eval` and `predict` take what they are not given from the
settings recorded with the weights. The settings of those other commands are in
tudui.config_commands; train's flags that are not settings of the run are TrainFlags, below.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from tudui.settings import Rule, Settings, check, one_of, option, up_to, within

AUGMENTS = ("auto", "none", "flip", "crop", "crop-flip", "alt-flip", "crop-alt-flip",
            "resized-crop", "resized-crop-flip")
LOADERS = ("auto", "tensor", "dataloader")
SAMPLERS = ("random", "balanced")
CLASS_WEIGHTS = ("none", "auto")
MONITORS = ("val_accuracy", "val_loss", "val_balanced_accuracy")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
OPTIMIZERS = ("sgd", "adamw", "muon")
SCHEDULES = ("constant", "cosine", "linear")
DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE = Rule(lambda v: v in DEVICES or (v.startswith("cuda:") and v[5:].isdigit()), "one of auto, cpu, cuda, "
              "cuda:N, mps")
HEADS = ("replace", "append")
EXTENSIONS = ("stretch", "tail", "restart")
TTA_LEVELS = (0, 1, 2)
RATE_SCALE = Rule(lambda v: 0 < v <= 1e4, "positive and at most 10000")



@dataclass(frozen=True, kw_only=True)
class DataConfig(Settings):
    dataset: str = option("data set: cifar10, cifar100, mnist, fashion-mnist, kmnist, svhn, stl10 (torchvision's, "
                        "in --data-dir), digits, synthetic, a folder, a .zip or .tar(.gz) of one, or a .csv list "
                        "of path,label rows", flag="--data",
                        rule=Rule(bool, "a data set name or path, not empty"), default="cifar10")
    data_dir: str = option("where torchvision's data sets (cifar10, mnist, ...) are stored or downloaded",
                           default="./data")
    val_split: float = option("share of every training class held out as the val split (which picks the best "
                            "epoch) when the data has none of its own; -1: 0.2 when it has no test split "
                            "either, none when it has one (cifar10, digits); 0: none",
                            rule=Rule(lambda v: v == -1 or 0 <= v < 1, "-1, 0, or between 0 and 1"),
                            default=-1.0)
    batch_size: int = option("images per batch", rule=up_to(1, 1 << 16), default=64)
    workers: int = option("DataLoader worker processes (-1: pick for the data set)", rule=up_to(-1, 256),
                        default=-1)
    normalize: bool = option("normalise images by the training set's channel mean and std",
                           default=True)
    augment: str = option("training augmentation: " + ", ".join(AUGMENTS)
                        + " (auto: none for digits and synthetic; for photos crop-flip up to 64 px, "
                        "resized-crop-flip above)", rule=one_of(*AUGMENTS), default="auto")
    download: bool = option("download a torchvision data set (cifar10, mnist, ...) when it is missing",
                            default=True)
    translate: int = option("pixels of random translation in the crop presets (-1: an eighth of the side)",
                          rule=up_to(-1, 1024), default=-1)
    max_bad_share: float = option("largest share of unreadable images in the data set (all its splits) "
                                "that is skipped with a warning (0.01: one in a hundred); more stops the run "
                                "(one bad file is always skipped, unless 0)", rule=within(0, 1, high_included=True),
                                default=0.01)
    loader: str = option("tensor: decode once, keep on the device, augment in batches (the photo preset: "
                       "random resized crops of a copy at twice the input size); dataloader: PIL + worker "
                       "processes; auto: tensor for images up to 64 px, and for the photo preset when its "
                       "decoded copy fits in memory",
                       rule=one_of(*LOADERS), default="auto")
    sampler: str = option("random: each epoch sees every training image once; balanced: images drawn with "
                        "replacement so that every class is drawn as often (for imbalanced classes)",
                        rule=one_of(*SAMPLERS), default="random")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Settings):
    arch: str = option("model name (see `tudui models`)", flag="--model", default="tudui")
    widths: str = option("fastnet's three block widths, e.g. 64,256,256 (empty: the model's own)",
                       default="")
    input_size: int = option("input side in pixels (0: the model's own: 32 for tudui's nets, the "
                           "weights' crop size for torchvision's, e.g. 224)",
                           rule=Rule(lambda v: v == 0 or 8 <= v <= 4096, "0 (the model's own) or 8 to 4096"),
                           default=0)
    head: str = option("torchvision models' new classifier: replace (the last Linear gets one output per "
                     "class) or append (a Linear added after it, as the course's add_module)",
                     rule=one_of(*HEADS), default="replace")
    pretrained: bool = option("start a torchvision model from its ImageNet weights (torch hub cache, "
                            "downloaded when missing)", default=False)
    weights_file: str = option("a local copy of torchvision's pretrained weights file (implies --pretrained)",
                             default="")
    weights: str = option("start from these weights: a state_dict file (torch.save(model.state_dict(), "
                        "'x.pth')), tudui weights or a run directory", default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(not (self.weights and (self.pretrained or self.weights_file)),
               "--weights and --pretrained/--weights-file both set the starting weights; pick one")
        if self.weights_file and not self.pretrained:   # as its help says, so config.yaml records it so
            object.__setattr__(self, "pretrained", True)


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Settings):
    optimizer: str = option("optimizer: sgd, adamw, or muon (Muon for convolution filters, SGD with the "
                          "settings below for the rest)", flag="--optimizer", rule=one_of(*OPTIMIZERS),
                          default="sgd")
    lr: float = option("peak learning rate (default: 0.01 for sgd and muon, 0.001 for adamw)",
                     rule=Rule(lambda v: 0 < v <= 1000, "positive and at most 1000"), kind=float, default=None)
    momentum: float = option("SGD momentum", rule=within(0, 1), default=0.9)
    nesterov: bool = option("use Nesterov momentum with SGD", default=False)
    weight_decay: float = option("weight decay", rule=up_to(0, 1e4), default=5e-4)
    schedule: str = option("learning-rate schedule: " + ", ".join(SCHEDULES), rule=one_of(*SCHEDULES),
                         default="cosine")
    warmup_epochs: float = option("epochs of linear learning-rate warm-up", rule=up_to(0, 1e6), default=0.0)
    label_smoothing: float = option("label smoothing of the cross-entropy loss", rule=within(0, 1),
                                  default=0.0)
    class_weights: str = option("none, or auto: weigh each class's loss by the inverse of its share of the "
                              "training images (for imbalanced classes)", rule=one_of(*CLASS_WEIGHTS),
                              default="none")
    final_lr: float = option("learning rate at the end of a cosine/linear schedule, as a share of the peak",
                           rule=within(0, 1, high_included=True), default=0.0)
    bias_lr_scale: float = option("learning-rate multiple for BatchNorm biases (their weight decay is "
                                "divided by it, so its pull stays the same)", rule=RATE_SCALE, default=1.0)
    backbone_lr_scale: float = option("learning-rate multiple for the backbone once --freeze-epochs are "
                                    "over (the head keeps the full rate)", rule=RATE_SCALE, default=0.1)
    loss_sum: bool = option("sum the loss over the batch instead of averaging it", default=False)
    muon_lr: float = option("with --optimizer muon: the filters' learning rate (a step's size relative "
                          "to the filters' norm)", rule=Rule(lambda v: 0 < v <= 1000, "positive and at most 1000"),
                          default=0.24)
    muon_momentum: float = option("with --optimizer muon: the filters' momentum", rule=within(0, 1),
                                default=0.6)
    muon_steps: int = option("with --optimizer muon: Newton-Schulz steps that orthogonalise each filter "
                             "update (the record uses 3; 5 is closer to orthogonal)", rule=up_to(1, 20), default=5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr is None:  # not given: the optimizer's usual value, resolved here so that it is recorded
            object.__setattr__(self, "lr", 1e-3 if self.optimizer == "adamw" else 0.01)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Settings):
    epochs: int = option("passes over the training set", rule=up_to(1, 1_000_000), default=10)
    seed: int = option("random seed (weights, shuffling, augmentation, splits)", rule=up_to(0, 2**32 - 1),
                     default=0)
    device: str = option("auto, cpu, cuda, cuda:N (one GPU of several) or mps (auto: cuda, then mps, then cpu; "
                         "under torchrun each process takes the GPU of its local rank)", rule=DEVICE,
                       cli={"metavar": "DEVICE"}, default="auto")
    project: str = option("folder that holds the run directories", default="runs")
    run_name: str = option("run directory name (default: exp, exp2, ...; a name taken already gets 2, 3, ...)",
                           flag="--name",
                           rule=Rule(lambda v: "/" not in v and "\\" not in v and v.isprintable(),
                                     "a directory name, not a path (use --project for the parent), of "
                                     "printable characters"),
                           default="")
    log_every: int = option("log the training loss to TensorBoard every N steps", rule=up_to(1, 1 << 30),
                          default=20)
    eval_every: int = option("evaluate on the val split every N epochs (0: only after the last)",
                           rule=up_to(0, 1_000_000), default=1)
    monitor: str = option("the val metric that picks the best epoch (and that --patience watches): "
                        + ", ".join(MONITORS) + " (the mean recall of the classes: every class counts the "
                        "same, for imbalanced data)", rule=one_of(*MONITORS), default="val_accuracy")
    patience: int = option("stop after N epochs in which --monitor did not improve on its best (0: never)",
                         rule=up_to(0, 1_000_000), default=0)
    precision: str = option("fp32, bf16, fp16 or auto: the autocast dtype (auto: bf16 where the device has "
                            "it, fp16 on older GPUs, else fp32)",
                          rule=one_of(*PRECISIONS), default="fp32")
    channels_last: bool = option("channels-last memory layout (faster convolutions on most hardware)",
                               default=False)
    compile: bool = option("torch.compile the model (slow first steps, faster after)", default=False)
    sync_bn: bool = option("with several processes on GPUs (torchrun): BatchNorm statistics over the whole batch, "
                           "not each process's part", default=False)
    tta: int = option("test-time augmentation: 0 none, 1 (or a bare --tta) the image and its mirror, "
                    "2 adds 1-px shifts (never mirrored for digits, mnist, kmnist, svhn or synthetic data, "
                    "unless trained with a flip)", rule=one_of(*TTA_LEVELS), cli={"nargs": "?", "const": 1},
                    default=0)
    lookahead: bool = option("lookahead weight averaging, applied at the end", default=False)
    time_budget: float = option("seconds of training to fit the schedule into, in at most --epochs epochs "
                                "(0: run --epochs)",
                              rule=up_to(0, 1e8), default=0.0)
    whiten_bias_epochs: int = option("fastnet: epochs in which its whitening stem's bias learns, then it "
                                   "is frozen (-1: all)", rule=up_to(-1, 1_000_000), default=-1)
    progressive_size: int = option("progressive resizing: the first --progressive-epochs epochs train on images "
                                   "scaled down to this side, the rest at the input size (0: off; tensor "
                                   "loader, and a model that pools globally, as fastnet and torchvision's do)",
                                   rule=up_to(0, 4096), default=0)
    progressive_epochs: int = option("epochs at --progressive-size (under --time-budget: the same share of the "
                                     "budget, as for --warmup-epochs)", rule=up_to(0, 1_000_000), default=0)
    report: bool = option("at the end, write report.html, pictures of the confusion matrix, mistakes "
                        "and curves, and TensorBoard figures into the run directory (metrics.json is "
                        "written either way)", default=True)
    freeze_backbone: bool = option("train only the classifier head; every other layer keeps its weights",
                                 default=False)
    freeze_epochs: int = option("fine-tune: train only the head for the first N epochs, then every layer "
                              "(the backbone at --backbone-lr-scale times the rate)", default=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.freeze_epochs < self.epochs,
               f"--freeze-epochs must be 0 or more and below --epochs ({self.epochs}), got {self.freeze_epochs}: "
               f"a larger --epochs, or --freeze-epochs 0, leaves epochs for the whole model")
        if self.progressive_size:
            check(self.progressive_size >= 8, f"--progressive-size must be 0 (off) or at least 8 pixels, got "
                                              f"{self.progressive_size}")
            off = (f"; --progressive-size 0 --progressive-epochs 0 turn it off (--progressive-size is "
                   f"{self.progressive_size})")
            check(self.epochs >= 2, f"progressive resizing needs at least 2 epochs (some small, then the input "
                                    f"size), got --epochs {self.epochs}{off}")
            check(0 < self.progressive_epochs < self.epochs,
                  f"--progressive-epochs must be from 1 to {self.epochs - 1} (below --epochs {self.epochs}, so the "
                  f"run ends at the input size), got {self.progressive_epochs}{off}")
        else:
            check(not self.progressive_epochs, "--progressive-epochs needs --progressive-size (the smaller side)")
        check(not (self.freeze_backbone and self.freeze_epochs),
               "--freeze-backbone freezes the whole run and --freeze-epochs only its start; pick one")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of a training run, in four sections (as config.yaml writes them)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig,
                             "optim": OptimConfig, "train": TrainConfig}


def iter_options() -> Iterator[tuple[str, dataclasses.Field]]:
    """Yield (section, field) for every training setting, in the order the help shows them."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            yield section, f


# ---------------------------------------------------------------- train's flags

def trust_pickle_option() -> Any:
    """--trust-pickle: a flag of each command that loads weights, never a setting in a file, so a
    shared recipe cannot switch on running code from a weights file."""
    return option("let --weights load a whole pickled model (torch.save(model, ...)), or a .pt2 or TorchScript "
                  "export; loading those unpickles or runs code from the file, so only for files you made",
                  default=False)


@dataclass(frozen=True, kw_only=True)
class TrainFlags(Settings):
    """Flags of `tudui train` that are not settings of the run: never read from a file, never recorded."""
    config: str = option("YAML settings (flags win over it): a file, or one of tudui's own recipes by name "
                         "(seed, cifar10-fast, cifar10-cpu, cifar10-cpu-10min, folder-resnet18)",
                         cli={"metavar": "FILE.yaml"}, default="")
    resume: str = option("continue a stopped run where it stopped (its own settings; flags may change them, "
                       "e.g. a larger --epochs extends a finished run, but not the model, data set, split, seed, "
                       "batch size or optimizer settings)", cli={"metavar": "RUN_DIR"}, default="")
    trust_pickle: bool = trust_pickle_option()
    extend: str = option("with --resume and a larger --epochs, the learning-rate schedule: stretch (laid again over "
                         "all the epochs, so a decayed rate rises part of the way back), tail (the old schedule goes "
                         "on: its last rate holds), restart (a new schedule, warm-up included, over the added "
                         "epochs)", rule=one_of(*EXTENSIONS), default="stretch")
    nproc: int = option("processes to train with on this machine, started through torchrun: one per GPU, or N on "
                        "the CPU with Gloo (1: this process alone; for several machines run torchrun yourself)",
                        rule=up_to(1, 1024), default=1)
