"""`ti` (and `kubectl ti`): list, describe, logs, stop and attach to training jobs; run a manifest locally.

Exit codes, for scripts: 0 done (a job Completed), 1 the job Failed, 2 bad usage or manifest,
3 no such job, 4 the cluster or object store could not be used, 5 the job was Stopped, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from ti.job import FINISHED, TrainingJob, TrainingJobError, TrainingJobStopped, phase_of
from ti.session import JobNotFoundError, Session, SessionError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_STOPPED, EXIT_INTERRUPTED = (
    0,
    1,
    2,
    3,
    4,
    5,
    130,
)


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


# ---- commands ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, session: Session) -> int:
    jobs = sorted(session.list_jobs(), key=lambda b: b["metadata"].get("creationTimestamp", ""))
    if args.output == "json":
        print(json.dumps(jobs, indent=2))
        return EXIT_OK
    if args.output == "name":
        for body in jobs:
            print(body["metadata"]["name"])
        return EXIT_OK
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "PHASE", "INSTANCES", "AGE", "REASON"):
        table.add_column(column, no_wrap=True)
    for body in jobs:
        spec, status = body.get("spec", {}), body.get("status") or {}
        table.add_row(
            body["metadata"]["name"],
            status.get("phase") or "Pending",
            f"{spec.get('instanceCount', 1)} x {spec.get('instanceType', '?')}",
            _age(body["metadata"].get("creationTimestamp")),
            status.get("reason") or "",
        )
    console = _console()
    if not jobs:
        console.print(f"No training jobs in namespace {session.namespace}.")
    else:
        console.print(table)
    return EXIT_OK


def cmd_describe(args: argparse.Namespace, session: Session) -> int:
    body = TrainingJob(args.name, session).describe()
    if args.output in ("json", "yaml"):
        print(json.dumps(body, indent=2) if args.output == "json" else yaml.safe_dump(body, sort_keys=False))
        return EXIT_OK
    spec, status, meta = body.get("spec", {}), body.get("status") or {}, body["metadata"]
    console = _console()
    fields = [
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace", "")),
        ("Phase", status.get("phase") or "Pending"),
        ("Reason", status.get("reason")),
        ("Failure reason", status.get("failureReason")),
        ("Instances", f"{spec.get('instanceCount', 1)} x {spec.get('instanceType')}"),
        ("Image", spec.get("image") or f"TensorFlow {spec.get('frameworkVersion')}"),
        ("Entry point", spec.get("entryPoint")),
        ("Source", spec.get("sourceDir")),
        ("Inputs", ", ".join(f"{k}={v}" for k, v in sorted((spec.get("inputs") or {}).items())) or None),
        ("Output path", spec.get("outputPath")),
        ("Hyperparameters", json.dumps(spec.get("hyperparameters") or {}, sort_keys=True)),
        ("Started", status.get("startTime")),
        ("Completed", status.get("completionTime")),
        ("Billable seconds", status.get("billableSeconds")),
        ("Restarts", status.get("restartCount")),
        ("Model", status.get("modelArtifacts")),
        ("Output data", status.get("outputData")),
        ("Metrics", ", ".join(f"{k}={v}" for k, v in sorted((status.get("metrics") or {}).items())) or None),
    ]
    for label, value in fields:
        if value not in (None, ""):
            console.print(f"[bold]{label + ':':<18}[/bold] {value}")
    if status.get("instances"):
        table = Table(title="Instances", box=None, header_style="bold", title_justify="left")
        for column in ("INSTANCE", "POD", "NODE", "PHASE", "EXIT CODE", "RESTARTS"):
            table.add_column(column, no_wrap=True)
        for inst in status["instances"]:
            exit_code = inst.get("exitCode")
            table.add_row(
                inst.get("name", ""),
                inst.get("pod") or "-",
                inst.get("node") or "-",
                inst.get("phase", ""),
                "-" if exit_code is None else str(exit_code),
                str(inst.get("restarts", 0)),
            )
        console.print(table)
    if status.get("conditions"):
        table = Table(title="Conditions", box=None, header_style="bold", title_justify="left")
        for column in ("TYPE", "STATUS", "REASON", "MESSAGE"):
            table.add_column(column)
        for cond in status["conditions"]:
            table.add_row(
                cond.get("type", ""),
                cond.get("status", ""),
                cond.get("reason") or "",
                cond.get("message") or "",
            )
        console.print(table)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, session: Session) -> int:
    job = TrainingJob(args.name, session)
    job.describe()  # a missing job is exit code 3, not an empty log
    job.logs(follow=args.follow, instance=args.instance)
    return EXIT_OK


def cmd_stop(args: argparse.Namespace, session: Session) -> int:
    job = TrainingJob(args.name, session)
    phase = phase_of(job.describe())
    if phase in FINISHED:
        print(f"training job {args.name}: already {phase}")
        return EXIT_OK
    body = job.stop(wait=args.wait)
    print(f"training job {args.name}: {phase_of(body) if args.wait else 'stop requested'}")
    return EXIT_OK


def _result(body: dict[str, Any]) -> int:
    print(f"model: {(body.get('status') or {}).get('modelArtifacts', '-')}")
    return EXIT_OK


def cmd_attach(args: argparse.Namespace, session: Session) -> int:
    return _result(TrainingJob(args.name, session).wait(logs=not args.no_logs))


def cmd_run(args: argparse.Namespace, session: Session) -> int:
    from ti.api import TFTrainingJob

    text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    try:
        body = yaml.safe_load(text)
        job = TFTrainingJob.from_body(body)
    except (yaml.YAMLError, ValueError) as err:
        print(f"ti run: {args.filename} is not a valid TFTrainingJob: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.local:
        from ti.local.job import LocalTrainingJob, prepare_manifest

        job = prepare_manifest(job, session)
        local = LocalTrainingJob.start(
            job, None, session, workdir=Path(args.workdir) if args.workdir else None
        )
        result = local.wait(logs=True)
        print(f"model: {result.get('status', {}).get('modelArtifacts', '-')}")
        return EXIT_OK
    if not job.metadata.namespace:
        job.metadata.namespace = session.namespace
    session.create_job(job.to_body())
    print(f"training job {job.name} created in namespace {session.namespace}")
    if args.no_wait:
        return EXIT_OK
    return _result(TrainingJob(job.name, session).wait(logs=True))


# ---- the parser -----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ti",
        description="TI training jobs (TFTrainingJob) on Kubernetes, and on this machine.",
        epilog=(
            "exit codes: 0 ok, 1 job failed, 2 usage, 3 not found, 4 cluster unavailable, 5 stopped, "
            "130 Ctrl-C"
        ),
    )
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("list", aliases=["ls"], help="list training jobs")
    c.add_argument("-o", "--output", choices=["table", "name", "json"], default="table")
    c.set_defaults(run=cmd_list)

    c = sub.add_parser("describe", help="show a job's spec, status, instances and conditions")
    c.add_argument("name")
    c.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    c.set_defaults(run=cmd_describe)

    c = sub.add_parser("logs", help="print a job's logs, prefixed by instance")
    c.add_argument("name")
    c.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    c.add_argument("--instance", help="only this instance: worker-0, 1 (worker 1), ps-0, or a pod name")
    c.set_defaults(run=cmd_logs)

    c = sub.add_parser("stop", help="stop a running job (it ends in phase Stopped)")
    c.add_argument("name")
    c.add_argument("--wait", action="store_true", help="return once the job has ended")
    c.set_defaults(run=cmd_stop)

    c = sub.add_parser(
        "attach", help="follow a job to its end: status and logs; exit code tells how it ended"
    )
    c.add_argument("name")
    c.add_argument("--no-logs", action="store_true", help="print status transitions only")
    c.set_defaults(run=cmd_attach)

    c = sub.add_parser("run", help="run a TFTrainingJob manifest, in the cluster or --local on this machine")
    c.add_argument("-f", "--filename", required=True, help="the manifest (YAML or JSON; - for stdin)")
    c.add_argument("--local", action="store_true", help="run on this machine as processes, no cluster")
    c.add_argument("--workdir", help="local mode: where instances' /opt/ml trees go")
    c.add_argument("--no-wait", action="store_true", help="cluster: return once the job is created")
    c.set_defaults(run=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    session = Session(args.namespace, kubeconfig=args.kubeconfig, context=args.context)
    run: Callable[[argparse.Namespace, Session], int] = args.run
    try:
        return run(args, session)
    except JobNotFoundError as err:
        print(f"ti: {err}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except TrainingJobStopped as err:
        print(f"ti: {err}", file=sys.stderr)
        return EXIT_STOPPED
    except TrainingJobError as err:
        print(f"ti: {err}", file=sys.stderr)
        return EXIT_FAILED
    except SessionError as err:
        print(f"ti: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
