"""Compile-readiness without a GPU: one training step of every in-tree trainer is traced by TorchDynamo on the CPU
(`torch._dynamo.explain`), and a graph break whose cause lies in longnet's or a plugin's own code fails the test,
so the compiled CUDA path is exercised before a GPU ever runs it. Breaks inside torch or third-party libraries are
reported, not failed on."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny_seg_dataset import set_env

ROOT = Path(__file__).resolve().parents[2]
OWN_CODE = (str(ROOT / "longnet"), str(ROOT / "plugins"), str(ROOT / "examples"))

# trainer -> CPU-sized options (as longnet_train would receive them)
TRAINERS = {
    "nnUNetTrainer": [],
    "PriorConcatTrainer": ["--prior-seg", "gt"],
    "DiffWeightingTrainer": [],
    "LongRepPretrainer": ["--proj-width", "32", "--num-patches", "16"],
    "LongRepFinetuner": ["--cs-mode", "sum"],
    "TFMTrainer": ["--tiny", "--batch-size", "2", "--n-context", "2"],
    "STAMPTrainer": ["--preset", "tiny", "--batch-size", "2"],
    "STAMPProbeTrainer": ["--preset", "tiny", "--random-encoder", "--target", "converter", "--horizon-days", "730",
                          "--batch-size", "4"],
    "ClinImCLTrainer": ["--preset", "tiny", "--cube", "16", "--batch-size", "4"],
    "LEARNERTrainer": ["--preset", "tiny", "--frames", "4", "--image-size", "16", "--batch-size", "4"],
    "LEARNERChangeTrainer": ["--delta", "1.5"],  # + --encoder: a LEARNERTrainer checkpoint made by the fixture
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
    from longnet.demo.synthetic import generate_demo_dataset

    root = tmp_path_factory.mktemp("compile_ready")
    mp = pytest.MonkeyPatch()
    set_env(mp, root)
    generate_demo_dataset(root / "raw", 6, 1, (24, 32, 24), seed=2, min_visits=3, max_visits=3)
    assert main_plan_and_preprocess(["-d", "990", "-c", "3d_fullres", "-np", "1", "--align", "rigid"]) == 0
    yield root
    mp.undo()


def _trainer(name: str, args: list[str], root: Path):
    from longnet.cli.train import _CORE, build_parser
    from longnet.registry import get_trainer
    from longnet.training.launch import TrainRequest, _available_cases, build_trainer, load_split

    cls = get_trainer(name)
    ns = build_parser(cls).parse_args(["990", "3d_fullres", "all", "-tr", name, "-device", "cpu"] + args)
    options = {k: v for k, v in vars(ns).items() if k not in _CORE}
    trainer, _, pre_dir, _ = build_trainer(TrainRequest(dataset="990", configuration="3d_fullres", fold="all",
                                                        trainer_name=name, plans_name="nnUNetPlans", device="cpu",
                                                        resume=False, num_gpus=1, options=options))
    available = _available_cases(pre_dir, trainer.configuration_manager.data_identifier)
    train, val = load_split(pre_dir, "all", available, create=True)
    trainer.setup(pre_dir, root / "out" / name, train, val, verbose=False)
    trainer.check_requirements()
    trainer.initialize()
    return trainer


def _own_breaks(explanation) -> list[str]:
    found = []
    for reason in explanation.break_reasons:
        frames = [f for f in reason.user_stack if f.filename.startswith(OWN_CODE)]
        innermost = reason.user_stack[-1] if reason.user_stack else None
        if innermost is not None and innermost.filename.startswith(OWN_CODE):
            found.append(f"{reason.reason.splitlines()[0][:160]} at {innermost.filename}:{innermost.lineno}")
        elif frames:
            print(f"(library graph break, called from {frames[-1].filename}:{frames[-1].lineno}: "
                  f"{reason.reason.splitlines()[0][:120]})")
    return found


def test_every_in_tree_trainer_is_covered():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    registered = {line.split("=")[0].strip() for line in cfg["options.entry_points"]["longnet.trainers"].splitlines()
                  if line.strip()}
    variants = {n for n in registered if n.startswith("nnUNetTrainer") and n != "nnUNetTrainer"}
    assert set(TRAINERS) == registered - variants  # the variants change options of nnUNetTrainer's one step


@pytest.mark.parametrize("name", list(TRAINERS))
def test_training_step_traces_without_graph_breaks_in_own_code(name, cohort, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("LONGNET_COMPILE", "0")  # the eager module is traced here; compile() would wrap it
    args = list(TRAINERS[name])
    if name == "LEARNERChangeTrainer":
        encoder = _trainer("LEARNERTrainer", TRAINERS["LEARNERTrainer"], cohort)
        path = cohort / "learner_encoder" / "checkpoint_final.pth"
        path.parent.mkdir(exist_ok=True)
        encoder.output_folder = path.parent
        encoder.save_checkpoint(path.name, 1)
        args += ["--encoder", str(path)]
    trainer = _trainer(name, args, cohort)
    torch._dynamo.reset()
    batch = trainer.prepare_batch(next(iter(trainer.train_loader())))
    explanation = torch._dynamo.explain(trainer.training_step)(batch)
    assert explanation.graph_count >= 1
    breaks = _own_breaks(explanation)
    assert not breaks, f"{name}: graph breaks in longnet's code:\n" + "\n".join(breaks)



def test_one_inductor_step_of_the_planned_unet(cohort, monkeypatch):
    """The U-Net step shared by nnUNetTrainer and its variants, LongRep and the prior-conditioned trainers, compiled
    by inductor (C++ on the CPU) and run forward and backward: a compile error fails here, not on a GPU node."""
    torch.set_num_threads(1)
    monkeypatch.setenv("LONGNET_COMPILE", "0")
    trainer = _trainer("nnUNetTrainer", [], cohort)
    batch = trainer.prepare_batch(next(iter(trainer.train_loader())))
    torch._dynamo.reset()
    trainer.network = torch.compile(trainer.network, backend="inductor")
    before = [p.detach().clone() for p in trainer.network.parameters()]
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = trainer.training_step(batch)["loss"]
    trainer.backward_and_step(loss)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.network.parameters()))
