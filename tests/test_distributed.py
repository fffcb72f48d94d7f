"""Data parallelism: `--num-processes 2` (gloo on CPU) logs what one process logs with the same
global batch, for DPO and for β-DPO (whose β and pair filter use the gathered global batch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefopt.testing import run_cli

STEPS = 3
GLOBAL_BATCH = 8
PAIRS = 960
SETS = [
    "training.logging_steps=1",
    "training.save_strategy=no",
    "training.learning_rate=1e-3",
    "training.bf16=false",  # fp32, as a Hugging Face user asks for it (not model.precision)
]
COMPARED = (
    "loss",
    "grad_norm",
    "epoch",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
ALGORITHM_FLAGS = {"dpo": [], "beta-dpo": ["--rho", "0.5", "--alpha", "1.0"]}
ALGORITHM_METRICS = {"dpo": (), "beta-dpo": ("beta", "M0", "sigma", "keep_ratio", "gap_kept_mean")}


def logged_steps(output_dir: Path) -> list[dict]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "loss" in record]


def one_process_run(
    algorithm: str, model: Path, data: Path, out: Path, flags: list[str]
) -> list[dict]:
    """The reference: one process, the whole global batch on it (in this test process)."""
    from prefopt.cli.common import quiet_libraries
    from prefopt.config_layers import resolve_run_config
    from prefopt.registry import get_algorithm
    from prefopt.training.run import train

    spec = get_algorithm(algorithm)
    names, values = flags[::2], flags[1::2]
    algorithm_flags = {
        f"algorithm.{name.lstrip('-')}": value for name, value in zip(names, values, strict=True)
    }
    config = resolve_run_config(
        spec,
        None,
        {
            "model.name_or_path": str(model),
            "data.train": str(data),
            "training.output_dir": str(out),
            "training.max_steps": STEPS,
            "training.per_device_train_batch_size": GLOBAL_BATCH,
            **algorithm_flags,
        },
        SETS,
    )
    quiet_libraries()
    train(config, spec, quiet=True)
    return logged_steps(out)


@pytest.mark.parametrize("algorithm", ["dpo", "beta-dpo"])
def test_two_processes_log_what_one_process_logs(
    algorithm: str, tiny_model: Path, tmp_path: Path
) -> None:
    from prefopt.testing import synthetic_pairs, write_pairs

    # Enough pairs, of many lengths, for length grouping's "megabatches" of up to 50 batches:
    # the shuffled, length-grouped order must be the same for 1 x 8 and 2 x 4 pairs per step.
    rows = synthetic_pairs(PAIRS, seed=5)
    for index, row in enumerate(rows):
        row["prompt"] = "Please, " * (index * 7 % 23) + row["prompt"]
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", rows)
    flags = ALGORITHM_FLAGS[algorithm]
    single = one_process_run(algorithm, tiny_model, pairs_file, tmp_path / "one", flags)

    out = tmp_path / "two"
    sets = [item for value in SETS for item in ("--set", value)]
    code, stdout, stderr = run_cli(
        "train", algorithm, "--model", str(tiny_model), "--train-file", str(pairs_file),
        "--output-dir", str(out), "--max-steps", str(STEPS), "--num-processes", "2",
        "--set", f"training.per_device_train_batch_size={GLOBAL_BATCH // 2}", *sets, *flags, "-q",
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.count("run finished") == 1  # the summary comes from rank 0 only
    double = logged_steps(out)

    assert [r["step"] for r in single] == [r["step"] for r in double] == list(range(1, STEPS + 1))
    # epoch = step * global batch / pairs: both runs consumed 8 pairs per step
    assert double[0]["epoch"] == pytest.approx(GLOBAL_BATCH / PAIRS)
    assert single[-1]["loss"] != pytest.approx(single[0]["loss"], abs=1e-4)  # training moved
    for one, two in zip(single, double, strict=True):
        for key in COMPARED + ALGORITHM_METRICS[algorithm]:
            assert two[key] == pytest.approx(one[key], abs=1e-6, rel=1e-6), (one["step"], key)
    if algorithm == "beta-dpo":
        betas = [r["beta"] for r in double]
        assert len(set(betas)) == STEPS  # β moved every step, identically in both runs
        assert all(r["keep_ratio"] == 0.5 for r in double)  # 4 of the 8 global pairs kept


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_torchrun_nodes_log_what_one_process_logs(
    tiny_model: Path, pairs_file: Path, tmp_path: Path
) -> None:
    """Two "machines" on localhost: one torchrun per node (--nnodes 2 --node-rank 0/1, one
    process each, c10d rendezvous on 127.0.0.1) train one run into one output folder."""
    import os
    import subprocess
    import sys

    single = one_process_run("dpo", tiny_model, pairs_file, tmp_path / "one", [])
    out = tmp_path / "nodes"
    sets = [*SETS, f"training.per_device_train_batch_size={GLOBAL_BATCH // 2}"]
    endpoint = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")

    def node(rank: int) -> list[str]:
        return [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--node-rank", str(rank), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint, "-m", "prefopt", "train", "dpo",
            "--model", str(tiny_model), "--train-file", str(pairs_file),
            "--output-dir", str(out), "--max-steps", str(STEPS), "-q",
            *(item for value in sets for item in ("--set", value)),
        ]  # fmt: skip

    nodes = []
    for rank in (0, 1):
        pipe = subprocess.PIPE
        nodes.append(subprocess.Popen(node(rank), env=env, stdout=pipe, stderr=pipe, text=True))
    outputs = [process.communicate(timeout=300) for process in nodes]
    for process, (_, stderr) in zip(nodes, outputs, strict=True):
        assert process.returncode == 0, stderr
    assert sum(stdout.count("run finished") for stdout, _ in outputs) == 1  # global rank 0
    double = logged_steps(out)
    assert [r["step"] for r in double] == list(range(1, STEPS + 1))
    assert double[0]["epoch"] == pytest.approx(GLOBAL_BATCH / 64)  # 8 pairs a step in all
    for one, two in zip(single, double, strict=True):
        for key in COMPARED:
            assert two[key] == pytest.approx(one[key], abs=1e-5, rel=1e-5), (one["step"], key)


def test_num_processes_decides_who_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefopt.errors import UsageError
    from prefopt.training.launch import wants_launch

    for name in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "ACCELERATE_PROCESS_ID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert wants_launch(None) is False and wants_launch(1) is False
    assert wants_launch(2) is True
    with pytest.raises(UsageError, match="at least 1"):
        wants_launch(0)
    # inside a worker started by torchrun / accelerate launch: never launch again
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert wants_launch(None) is False and wants_launch(2) is False
    with pytest.raises(UsageError, match="--num-processes 4 conflicts with the launcher's WORLD"):
        wants_launch(4)


def test_worker_errors_are_printed_once(tiny_model: Path, tmp_path: Path) -> None:
    from prefopt.testing import synthetic_pairs, write_pairs

    rows = synthetic_pairs(8)
    rows[2]["chosen"] = 7  # every worker reads the data and stops at line 3
    data = write_pairs(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    code, _, stderr = run_cli(
        "train", "dpo", "--model", str(tiny_model), "--train-file", str(data),
        "--output-dir", str(out), "--max-steps", "1", "--num-processes", "2", "-q",
    )  # fmt: skip
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {data}:3: chosen: expected a string or a list of messages, got int 7"
    ]
    assert "Traceback" not in stderr


def test_worker_error_lines_are_grouped_by_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefopt.training.launch import (
        WORKER_ERRORS_VARIABLE,
        leave_worker_error,
        worker_errors,
    )

    monkeypatch.delenv(WORKER_ERRORS_VARIABLE, raising=False)
    monkeypatch.setenv("RANK", "0")
    assert leave_worker_error("boom") is False  # not a worker of --num-processes: print it
    monkeypatch.setenv(WORKER_ERRORS_VARIABLE, str(tmp_path))
    for rank, message in ((0, "same"), (1, "same"), (2, "same"), (3, "only here")):
        monkeypatch.setenv("RANK", str(rank))
        assert leave_worker_error(message) is True
    assert worker_errors(tmp_path, 4) == ["ranks 0, 1, 2: same", "rank 3: only here"]
    (tmp_path / "rank-00003.txt").write_text("same")
    assert worker_errors(tmp_path, 4) == ["same"]
    assert worker_errors(tmp_path / "empty", 2) == []


def test_exit_code_is_the_failing_workers_not_a_stopped_ones() -> None:
    from types import SimpleNamespace

    from prefopt.training.launch import child_exit_code

    def failed(**codes: int) -> SimpleNamespace:
        ranks = {int(rank[1:]): SimpleNamespace(exitcode=code) for rank, code in codes.items()}
        return SimpleNamespace(failures=ranks)

    assert child_exit_code(failed(r0=-15, r1=2)) == 2  # rank 0 was stopped because rank 1 failed
    assert child_exit_code(failed(r0=-9, r1=-15)) == 137
    assert child_exit_code(failed(r0=-15, r1=-6)) == 134  # rank 1 aborted, rank 0 was stopped
    assert child_exit_code(SimpleNamespace(failures={})) == 1


def test_child_arguments_keep_the_layers_and_their_order() -> None:
    from prefopt.training.launch import child_arguments

    arguments = child_arguments(
        "dpo",
        "run.yaml",
        {"model.name_or_path": "org/model", "training.max_steps": 5, "data.eval": None,
         "training.run_name": "yes", "algorithm.beta": 0.25},
        ["training.learning_rate=1e-5"],
        resume=True,
        quiet=True,
        debug=True,
    )  # fmt: skip
    assert arguments == [
        "--debug", "train", "dpo", "--config", "run.yaml",
        "--set", 'model.name_or_path="org/model"', "--set", "training.max_steps=5",
        "--set", 'training.run_name="yes"', "--set", "algorithm.beta=0.25",
        "--set", "training.learning_rate=1e-5", "--resume", "--quiet",
    ]  # fmt: skip
    # Every --set value reads back as the value the parent resolved.
    from prefopt.config_values import parse_scalar

    assert parse_scalar('"yes"') == "yes" and parse_scalar("5") == 5


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accelerate"


@pytest.mark.parametrize(
    ("name", "kind", "stage"),
    [
        ("multi_gpu.yaml", "MULTI_GPU", None),
        ("deepspeed_zero2.yaml", "DEEPSPEED", 2),
        ("deepspeed_zero3.yaml", "DEEPSPEED", 3),
        ("fsdp.yaml", "FSDP", None),
    ],
)
def test_example_accelerate_configs_parse(name: str, kind: str, stage: int | None) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / name))
    assert config.distributed_type.value == kind
    assert config.num_processes > 1 and not config.use_cpu
    if stage is not None:
        json_file = config.deepspeed_config["deepspeed_config_file"]
        assert json_file.startswith("examples/accelerate/")  # relative to the repository root
        settings = json.loads((EXAMPLES.parent.parent / json_file).read_text())
        assert settings["zero_optimization"]["stage"] == stage
        # batch sizes, accumulation, clipping and precision come from the prefopt run config
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            assert settings[key] == "auto"
        assert settings["bf16"]["enabled"] == "auto"
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2


DOCS = Path(__file__).resolve().parent.parent / "docs" / "distributed.md"


def docs_block(language: str, containing: str) -> str:
    """The fenced ``language`` block of docs/distributed.md that contains ``containing``."""
    import re

    blocks = re.findall(rf"^```{language}\n(.*?)^```$", DOCS.read_text(), re.S | re.M)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"one ```{language} block with {containing!r} in {DOCS}"
    return found[0]


def test_docs_slurm_script_is_valid_bash_and_valid_torchrun(tmp_path: Path) -> None:
    import shlex
    import subprocess

    from torch.distributed.run import get_args_parser

    script = docs_block("bash", "#SBATCH")
    assert script.startswith("#!/bin/bash\n")
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # The torchrun line, with the values Slurm would give its variables.
    command = script[script.index("srun torchrun") :].replace("\\\n", " ")
    values = {
        '"$SLURM_NNODES"': "2", '"$SLURM_GPUS_PER_NODE"': "8", '"$SLURM_JOB_ID"': "42",
        '"$head_node:29500"': "node0:29500", '"$run_dir"': "runs/dpo", '"${resume[@]}"': "",
    }  # fmt: skip
    for variable, value in values.items():
        command = command.replace(variable, value)
    assert "$" not in command
    words = shlex.split(command)[2:]  # after "srun torchrun"
    args = get_args_parser().parse_args(words)
    assert (args.nnodes, args.nproc_per_node, args.rdzv_backend) == ("2", "8", "c10d")
    assert args.rdzv_endpoint == "node0:29500" and args.module
    assert args.training_script == "prefopt" and args.training_script_args[:2] == ["train", "dpo"]


def test_docs_accelerate_multi_node_config_is_an_accelerate_config(tmp_path: Path) -> None:
    import dataclasses

    import yaml
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    text = docs_block("yaml", "num_machines")
    keys = set(yaml.safe_load(text))
    assert keys <= {field.name for field in dataclasses.fields(ClusterConfig)}
    path = tmp_path / "multi_node.yaml"
    path.write_text(text)
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == "MULTI_GPU"
    assert (config.num_machines, config.num_processes, config.machine_rank) == (2, 16, 0)
    assert (config.main_process_ip, config.main_process_port) == ("node0", 29500)
