"""``fleetmine policy ...`` and ``shadow``: driving policies run beside the driver."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from fleetmine._common import (
    AddressOpt,
    LakeOpt,
    WaitOpt,
    app,
    console,
    exit_if_failed,
    open_lake,
    run_with_progress,
    settings,
)

policy_app = typer.Typer(help="Driving policies (ONNX) and their open-loop evaluation.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

PolicyArg = Annotated[str, typer.Argument(help="NAME@VERSION, or NAME for its latest version")]


@policy_app.command("register")
def policy_register(
    name: Annotated[str, typer.Argument()],
    uri: Annotated[str, typer.Option(help="The policy's ONNX file (local path or s3://)")],
    params: Annotated[
        str, typer.Option(help="JSON I/O contract: inputs {state, frames}, horizon_s, rate_hz, outputs")
    ],
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Check an ONNX policy against its contract, keep a copy in the lake, register its next version."""
    from mining.policies.registry import read_file, register_policy
    from storage.errors import ConfigError

    try:
        contract = json.loads(params)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(contract, dict):
        raise ConfigError("--params must be a JSON object")
    lk = open_lake(lake, address)
    s = settings(lake, address)
    spec = register_policy(lk, name, read_file(uri, lk.root.storage_options), contract, uri, s.signal_rate_hz)
    console.print(f"registered {spec.ref} at {spec.uri}", soft_wrap=True)


@policy_app.command("list")
def policy_list(lake: LakeOpt = None, address: AddressOpt = None) -> None:
    """Registered policies and their contracts."""
    from mining.policies.registry import list_policies

    table = Table()
    for col in ("policy", "inputs", "horizon", "outputs", "source"):
        table.add_column(col)
    for p in list_policies(open_lake(lake, address)):
        c = p.params
        ins = []
        if c.inputs.state is not None:
            ins.append(f"state {c.inputs.state.seconds:g} s of {', '.join(c.inputs.state.columns)}")
        if c.inputs.frames is not None:
            h, w = c.inputs.frames.size
            ins.append(f"{c.inputs.frames.count} frame(s) {h}x{w}")
        table.add_row(
            p.ref, "; ".join(ins), f"{c.horizon_s:g} s at {c.rate_hz:g} Hz", ", ".join(c.outputs), p.source
        )
    console.print(table)


@policy_app.command("train")
def policy_train(
    name: Annotated[str, typer.Argument()],
    baseline: Annotated[bool, typer.Option("--baseline", help="Fit the built-in ridge baseline")] = False,
    max_drives: Annotated[int, typer.Option(min=1, max=100_000, help="Drives to fit on")] = 500,
    lake: LakeOpt = None,
    address: AddressOpt = None,
) -> None:
    """Fit a baseline policy on the lake's own signals, write it as ONNX and register it."""
    from mining.policies.baseline import train_baseline
    from storage.errors import ConfigError

    if not baseline:
        raise ConfigError("only --baseline is trained here; register your own network with `policy register`")
    s = settings(lake, address)
    with console.status("fitting the baseline policy..."):
        spec, fit = train_baseline(open_lake(lake, address), name, s.signal_rate_hz, max_drives)
    scale = ", ".join(f"{a} {v:.3g}" for a, v in spec.params.error_scale.items())
    what = f"ridge on {fit.steps} steps of {fit.drives} drives"
    console.print(f"registered {spec.ref}: {what} (mean |error| {scale})")
    console.print(f"next: fleetmine shadow --policy {spec.ref}")


@app.command()
def shadow(
    policy: Annotated[str, typer.Option("--policy", help="NAME@VERSION, or NAME for its latest")],
    lake: LakeOpt = None,
    address: AddressOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Run a policy beside the driver over every clip it has not scored (policy_errors)."""
    from fleetmine.runs import submit_if_cluster
    from jobs.shadow_job import ShadowJob, run_shadow

    req = ShadowJob(policy=policy)
    if submit_if_cluster(req, lake, address, wait):
        return
    s = settings(lake, address)
    r = run_with_progress("shadow", "drives", lambda **hooks: run_shadow(s, req.policy, **hooks))
    console.print(
        f"{r.policy}: {r.scored} clips scored ({r.nothing_to_compare} with nothing to compare), "
        f"{r.already} already scored (run {r.run_id})"
    )
    exit_if_failed(r.failed)
