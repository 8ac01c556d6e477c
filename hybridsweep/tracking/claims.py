"""The claim protocol: which process trains a point, and what every other process does instead.

**Claims.** Before a process trains a point (or evaluates an initializer) it claims the run of
the point's identity (:mod:`hybridsweep.tracking.identity`): the run carries
``hybridsweep.claim`` (``host:pid:token``) and ``hybridsweep.heartbeat`` (unix seconds), which a
background thread renews every ``resume.heartbeat_s`` (:class:`~hybridsweep.tracking.tracker.RunTracker`).
A RUNNING run whose heartbeat is older than ``resume.claim_expiry_s`` (or whose process, on this
host, is gone) was left by a killed process: it is *stale* and can be resumed. A live claim is
never taken over. With a local store (SQLite or a folder) the decision runs under a file lock
beside the store, so it is exact. With a tracking server there is no shared lock: each contender
writes its claim, waits ``resume.claim_settle_s`` for the others' writes to land and reads the
claims back; a contender goes on only when its claim is the one live claim, else it withdraws
and retries after a random pause (:func:`claim_run`). This assumes that no contender stalls for
longer than the settle time between reading a stale run and claiming it.

**Decision** (:func:`claim_run`), for the runs of the point's hash, newest first:

- a FINISHED run: the point is done and is skipped;
- a RUNNING run with a live claim: another process is on it; this one leaves it alone (``busy``);
- a stale RUNNING run, or a KILLED one (interrupted by Ctrl-C, or told to exit: preempted): reopened
  and resumed into;
- a FAILED run, or none: a new run (a failure stays on record with its traceback).

**Ranks.** Under DDP only global rank zero talks to MLflow. It makes the decision before the
Trainer starts the other ranks and hands it to them in the environment (:func:`share_decision`),
which Lightning's launcher copies into every rank it starts; the other ranks read it there and
never open, log to or finish a run (their tracker is a :class:`RunTracker` without a run).
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta

from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from hybridsweep.tracking.identity import provenance_tags
from hybridsweep.tracking.store import (
    CLAIM_TAG,
    HASH_TAG,
    HEARTBEAT_TAG,
    ROLE_TAG,
    client,
    experiment_id,
    is_global_zero,
    store_lock,
    tracking_uri,
)
from hybridsweep.tracking.tracker import RunTracker

_DECISION_ENV = "HYBRIDSWEEP_DECISION_{role}_{digest}"


@dataclass(frozen=True)
class ClaimSettings:
    """How claims behave (``resume.*`` in the config)."""

    enabled: bool = True
    """False: never skip or resume; every start is a new run."""
    heartbeat_s: float = 30.0
    claim_expiry_s: float = 120.0
    claim_settle_s: float = 2.0

    @classmethod
    def from_config(cls, resume: DictConfig) -> ClaimSettings:
        return cls(bool(resume.enabled), float(resume.heartbeat_s), float(resume.claim_expiry_s),
                   float(resume.claim_settle_s))


@dataclass
class Decision:
    """What to do with one point (or zero-shot evaluation), as rank zero decided it.

    ``state``: ``done`` (``run_id`` finished it earlier), ``busy`` (``run_id`` is live in another
    process), or ``claimed`` (this process works on ``run_id``; ``resumed`` when the run existed).
    """

    state: str
    run_id: str
    resumed: bool = False

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def busy(self) -> bool:
        return self.state == "busy"


def _claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_live(run: Run, settings: ClaimSettings, now: float | None = None) -> bool:
    """Whether a RUNNING run is being worked on: a claim whose heartbeat is fresh and, when it was
    made on this host, whose process still exists."""
    claim = run.data.tags.get(CLAIM_TAG)
    if run.info.status != "RUNNING" or not claim:
        return False
    beat = float(run.data.tags.get(HEARTBEAT_TAG, 0.0))
    if (now or time.time()) - beat > settings.claim_expiry_s:
        return False
    host, pid, _ = claim.split(":", 2)
    return host != socket.gethostname() or _process_alive(int(pid))



def _runs_of(store: MlflowClient, experiment: str, role: str, digest: str) -> list[Run]:
    """Runs of ``experiment`` with ``role`` and identity ``digest``, newest first."""
    return store.search_runs(
        [experiment_id(store, experiment)],
        f"tags.`{HASH_TAG}` = '{digest}' and tags.`{ROLE_TAG}` = '{role}'",
        order_by=["attributes.start_time DESC"],
    )


def _decide(store: MlflowClient, experiment: str, role: str, digest: str, run_name: str, tags: Mapping[str, str],
            settings: ClaimSettings, me: str) -> tuple[Decision, bool]:
    """One look at the point's runs and, when nobody works on it, this process's claim:
    (decision, whether a new run was created for it)."""
    stamp = {CLAIM_TAG: me, HEARTBEAT_TAG: f"{time.time():.3f}"}
    runs = _runs_of(store, experiment, role, digest) if settings.enabled else []
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if finished:
        return Decision("done", finished[0].info.run_id), False
    live = [run for run in runs if claim_is_live(run, settings)]
    if live:
        return Decision("busy", live[0].info.run_id), False
    stale = [run for run in runs if run.info.status in ("RUNNING", "KILLED")]
    if stale:
        run_id = stale[0].info.run_id
        store.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**tags, **stamp}.items()])
        store.update_run(run_id, status="RUNNING")
        return Decision("claimed", run_id, resumed=True), False
    all_tags = {**tags, **provenance_tags(), HASH_TAG: digest, ROLE_TAG: role, **stamp}
    run_id = store.create_run(experiment_id(store, experiment), run_name=run_name, tags=all_tags).info.run_id
    return Decision("claimed", run_id), True


_JITTER = random.Random()
"""Its own generator: a claim must not move the global random state a point is seeded with."""


def claim_run(uri: str, experiment: str, role: str, digest: str, run_name: str, tags: Mapping[str, str],
              settings: ClaimSettings) -> Decision:
    """Skip, leave, resume or start the run of ``digest`` (module docstring), claiming it when
    this process is to work on it.

    Without a lock (a tracking server), a claim holds only once, ``claim_settle_s`` after it was
    written, it is the one live claim of the point: any write that landed before it is then
    visible, and any later contender sees it and leaves. Contenders that see each other all
    withdraw and retry after a random pause, so one of them goes on.
    """
    store = client(uri)
    me = _claimant()
    while True:
        with store_lock(uri) as exact:
            decision, created = _decide(store, experiment, role, digest, run_name, tags, settings, me)
        if exact or decision.state != "claimed":
            return decision
        time.sleep(settings.claim_settle_s)
        live = [run for run in _runs_of(store, experiment, role, digest) if claim_is_live(run, settings)]
        if [(run.info.run_id, run.data.tags.get(CLAIM_TAG)) for run in live] == [(decision.run_id, me)]:
            return decision
        if created:
            store.delete_run(decision.run_id)
        elif any(run.info.run_id == decision.run_id and run.data.tags.get(CLAIM_TAG) == me for run in live):
            store.set_tag(decision.run_id, HEARTBEAT_TAG, "0")  # withdraw from the reopened run
        time.sleep(_JITTER.uniform(0, 2 * settings.claim_settle_s))


def wait_for(uri: str, experiment: str, role: str, digest: str, run_name: str, tags: Mapping[str, str],
             settings: ClaimSettings, poll_s: float = 5.0) -> Decision:
    """:func:`claim_run` until the run is done or claimed by this process: while another process
    works on it, wait for it to finish (or for its claim to go stale)."""
    while True:
        decision = claim_run(uri, experiment, role, digest, run_name, tags, settings)
        if not decision.busy:
            return decision
        time.sleep(poll_s)


def _agent_store():
    """The key-value store that torchrun's agent serves its workers at MASTER_ADDR:MASTER_PORT, or
    None when this process was not started by torchrun. Ranks that torchrun starts on several
    nodes share no environment: rank zero hands them its decisions through this store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed import TCPStore

    # Rank zero may wait for another process's evaluation before it decides: the others wait too.
    return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                    timeout=timedelta(hours=6))


def share_decision(role: str, digest: str, decide) -> Decision:
    """Rank zero calls ``decide()`` and leaves the result in the environment, which the launcher
    copies into the ranks it starts; the other ranks read it from there. Under torchrun (ranks on
    several nodes, started by their agents) it goes through the agents' store instead."""
    key = _DECISION_ENV.format(role=role.replace("-", "_"), digest=digest)
    store = _agent_store() if key not in os.environ else None
    # A restarted group (torchrun --max-restarts) decides again.
    store_key = f"hybridsweep/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{key}"
    if is_global_zero():
        decision = decide()
        os.environ[key] = json.dumps(asdict(decision))
        if store is not None:
            store.set(store_key, os.environ[key])
        return decision
    if store is not None:
        return Decision(**json.loads(store.get(store_key)))
    if key not in os.environ:
        raise RuntimeError(
            f"rank {rank_zero_only.rank} has no decision from rank zero for {role} {digest} (${key} unset): "
            "ranks must be started by the Trainer of a rank-zero process (trainer.devices=N) or by torchrun"
        )
    return Decision(**json.loads(os.environ[key]))


def open_run(cfg: DictConfig, role: str, digest: str, run_name: str, tags: Mapping[str, str],
             wait: bool = False) -> tuple[Decision, RunTracker]:
    """The decision for the run of ``digest`` (made on rank zero, shared with the other ranks) and
    the tracker to log into it: a live one on rank zero when the run is claimed, else one that
    does nothing. ``wait``: while another process works on it, wait rather than leave it."""
    uri = tracking_uri(cfg.tracking.tracking_uri)
    settings = ClaimSettings.from_config(cfg.resume)
    claim = wait_for if wait else claim_run
    decision = share_decision(role, digest, lambda: claim(uri, cfg.tracking.experiment, role, digest, run_name, tags, settings))
    if decision.state != "claimed" or not is_global_zero():
        return decision, RunTracker()
    return decision, RunTracker(uri, decision.run_id, settings.heartbeat_s, decision.resumed, cfg.tracking.system_metrics)

