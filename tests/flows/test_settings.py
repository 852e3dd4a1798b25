"""One place for every setting: the stage configs' fields, and every command, flow and
deployment that offers them.

For every command that runs a flow, the command's options, the flow's parameters and
the deployments of that flow are compared with each other and with the config
dataclasses the flow builds: the same names, types and defaults. A new setting, or a
changed default, that is not carried everywhere fails here with the place to fix.
No Prefect server is needed (nothing runs; signatures and the parser are read).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from aurora_pipeline.classify.model import ClassifierConfig
from aurora_pipeline.cluster.model import ClusterConfig
from aurora_pipeline.embed.config import EmbedConfig
from aurora_pipeline.encoder.config import PretrainConfig
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.oath.config import OathBenchmarkConfig
from aurora_pipeline.search.config import IndexConfig
from aurora_pipeline.synth.demo import DemoConfig
from aurora_cli import main as cli
from aurora_cli.options import field_comments, field_default

REPO = Path(__file__).resolve().parents[2]

# command -> (the flow it runs as "module:function", the configs whose fields it offers)
COMMANDS = {
    "ingest": ("flows.ingest:ingest_archive", (PreprocessConfig,)),
    "pretrain": ("flows.pretrain:pretrain_encoder_flow", (PretrainConfig,)),
    "embed": ("flows.embed:embed_frames_flow", (EmbedConfig,)),
    "fit-classifier": ("flows.classify:fit_classifier_flow", (ClassifierConfig,)),
    "classify": ("flows.classify:classify_frames", ()),
    "cluster": ("flows.cluster:cluster_embeddings_flow", (ClusterConfig,)),
    "oath-benchmark": ("flows.oath_benchmark:oath_benchmark", (OathBenchmarkConfig,)),
    "label-archive": ("flows.label_archive:label_archive", (PreprocessConfig, EmbedConfig)),
    "demo": ("flows.demo:demo", (DemoConfig,)),
    "index": ("flows.build_index:build_index_flow", (IndexConfig,)),
}

# Where a command or flow means something else than the field's default by leaving a setting
# out; each says what. (command or flow, setting) -> the default it has instead.
DELIBERATE = {
    ("ingest", "image_size"): None,            # the store's own setting (128 for a new store)
    ("pretrain", "image_size"): None,          # the store's frame size
    ("label-archive", "image_size"): None,     # the store's own setting
    ("label-archive", "min_elevation"): None,  # the store's own (with skymaps)
    ("label-archive", "map_altitude_km"): None,  # the store's own (with skymaps)
    ("oath-benchmark", "splits"): "0,1,2,3,4",  # the same rows, as the command line writes them
    ("oath-benchmark", "supervised_epochs"): None,  # 30 at 100 epochs, scaled with epochs (the config resolves it)
}

# Command options that are no flow parameter (the command resolves them itself), and flow
# parameters with no option; each with the reason.
CLI_ONLY = {("cluster", "out"): "defaults to STORE.clusters, computed by the command",
            **{("fit-classifier", name): "with --oath-dir the command runs the flow fit-classifier-oath instead"
               for name in ("oath_dir", "checkpoint", "device", "splits", "max_images_per_class")},
            ("index", "exact_below"): "passed inside the flow's `config`",
            ("index", "nlist"): "passed inside the flow's `config`",
            ("index", "nprobe"): "passed inside the flow's `config`"}
FLOW_ONLY = {("cluster", "overwrite"): "the command always re-clusters",
             ("index", "config"): "built by the command from --exact-below, --nlist, --nprobe"}


def _flow(command: str):
    module, name = COMMANDS[command][0].split(":")
    return getattr(importlib.import_module(module), name)


def _parameters(command: str) -> dict[str, inspect.Parameter]:
    fn = _flow(command)
    return dict(inspect.signature(getattr(fn, "fn", fn)).parameters)


def _options(command: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions
            if a.dest not in ("help", "debug") and a.dest is not argparse.SUPPRESS}


def _fields(command: str) -> dict[str, type]:
    out = {}
    for cls in COMMANDS[command][1]:
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, cls)
    return out


def _expected(command: str, name: str, cls: type):
    return DELIBERATE.get((command, name), field_default(cls, name))


def test_every_command_that_runs_a_flow_is_checked_here():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    runs_a_flow = set(sub.choices) - cli._NO_FLOW
    assert runs_a_flow == set(COMMANDS), "add the command to COMMANDS with its flow and configs"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_option_defaults_are_the_config_defaults(command):
    options, fields = _options(command), _fields(command)
    drift = {name: (action.default, _expected(command, name, fields[name]))
             for name, action in options.items() if name in fields
             and action.default != _expected(command, name, fields[name])}
    assert drift == {}, f"`{command}` options whose default differs from the config's (option, config)"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_option_types_are_the_config_types(command):
    from aurora_cli.options import field_type

    options, fields = _options(command), _fields(command)
    drift = {}
    for name, action in options.items():
        if name not in fields or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            continue
        kind, default = field_type(fields[name], name), field_default(fields[name], name)
        if kind is str or default is None:
            continue
        parsed = (action.type or str)(str(default))  # the option reads the field's default back as the field's type
        if not isinstance(parsed, kind):
            drift[name] = (action.type, kind)
    assert drift == {}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_flow_defaults_are_the_config_defaults(command):
    params, fields = _parameters(command), _fields(command)
    drift = {name: (p.default, _expected(command, name, fields[name])) for name, p in params.items()
             if name in fields and p.default is not inspect.Parameter.empty
             and p.default != _expected(command, name, fields[name])}
    assert drift == {}, f"flow of `{command}`: parameters whose default differs from the config's (flow, config)"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_and_flow_offer_the_same_settings_with_the_same_defaults(command):
    options, params = _options(command), _parameters(command)
    missing_option = sorted(n for n in params if n not in options and (command, n) not in FLOW_ONLY)
    missing_parameter = sorted(n for n in options if n not in params and (command, n) not in CLI_ONLY)
    assert (missing_option, missing_parameter) == ([], []), \
        f"`{command}`: flow parameters with no option, options with no flow parameter"
    drift = {n: (options[n].default, p.default) for n, p in params.items() if n in options
             and p.default is not inspect.Parameter.empty and options[n].default != p.default}
    assert drift == {}, f"`{command}`: option defaults that differ from the flow's (option, flow)"


def _deployments() -> list[dict]:
    return yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["entrypoint"] + "/" + d["name"])
def test_deployment_parameters_are_flow_parameters_and_restate_no_default(deployment):
    path, name = deployment["entrypoint"].split(":")
    module = path.removesuffix(".py").replace("/", ".")
    fn = getattr(importlib.import_module(module), name)
    params = inspect.signature(fn.fn).parameters
    given = deployment.get("parameters") or {}
    unknown = sorted(set(given) - set(params))
    assert unknown == [], f"{deployment['entrypoint']}: parameters the flow does not take"
    restated = sorted(k for k, v in given.items() if params[k].default is not inspect.Parameter.empty
                      and v == params[k].default and v is not None)  # a commented null shows where to set it
    assert restated == [], "restated defaults drift when the default changes: leave them out"


def test_every_offered_field_has_a_comment_for_its_help():
    undocumented = sorted(f"{cls.__name__}.{f.name}" for _, configs in COMMANDS.values() for cls in configs
                          for f in dataclasses.fields(cls) if not field_comments(cls).get(f.name))
    assert undocumented == []


def test_options_are_built_from_the_fields():
    """The help is the field's comment and the default comes from the field."""
    parser = argparse.ArgumentParser()
    from aurora_cli.options import config_option

    config_option(parser, ClusterConfig, "k_max")
    config_option(parser, PretrainConfig, "mixed_precision")
    action = {a.dest: a for a in parser._actions}
    assert action["k_max"].default == ClusterConfig.k_max and action["k_max"].type is int
    assert "largest k tried" in action["k_max"].help and f"(default {ClusterConfig.k_max})" in action["k_max"].help
    assert action["mixed_precision"].option_strings == ["--no-mixed-precision"]
    assert parser.parse_args(["--no-mixed-precision"]).mixed_precision is False
    assert parser.parse_args([]).mixed_precision is True
