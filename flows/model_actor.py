"""The run's model actor: one named Ray actor holding the language model (``LLMService``), started
by the flow before a model-backed stage and stopped after it. Shard tasks reach it through
:class:`ActorService`, the ``CompletionService`` that ``tasks.llm.client.LLMClient`` is given, so
that no stage module imports Ray."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import ray

from tasks.errors import ReleaseError
from tasks.llm.backends import Completion, Request
from tasks.llm.client import LLMService
from tasks.llm.config import LLMConfig
from tasks.ray_local import MODEL_SLOT
from tasks.storage import canonical_json

NAMESPACE = "refinery"


def actor_name(release: str, cfg: LLMConfig) -> str:
    return f"refinery-llm-{release}-{hashlib.sha256(canonical_json(cfg.model_dump(mode='json'))).hexdigest()[:12]}"


def start_actor(release: str, cfg: LLMConfig) -> tuple[str, Any]:
    """Start (or find) the run's model actor; returns its name, for the shard tasks, and its
    handle, which the caller must hold: Ray destroys a non-detached actor without handles."""
    name = actor_name(release, cfg)
    # its CPUs out of the model share where the Ray has one (every local Ray Refinery starts):
    # runs sharing one Ray never hold every CPU with their actors (tasks/ray_local.py)
    share = ray.cluster_resources().get(MODEL_SLOT)
    if share and cfg.actor_cpus > share:
        raise ReleaseError(f"llm.actor_cpus={cfg.actor_cpus:g} is more than model actors may hold on this Ray "
                           f"({share:g} of its CPUs: one is kept for the shard tasks)")
    slot = {MODEL_SLOT: cfg.actor_cpus} if share and cfg.actor_cpus > 0 else {}
    remote = ray.remote(num_cpus=cfg.actor_cpus, max_concurrency=max(1, cfg.concurrency), resources=slot)(LLMService)
    handle = remote.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote(cfg)
    ready = handle.model_id.remote()
    if slot and not ray.wait([ready], timeout=10)[0]:
        logging.getLogger("refinery").warning(
            "model actor %s not ready after 10 s: loading its model, or waiting for the CPUs that another "
            "run's model actor holds on this shared Ray", name)
    ray.get(ready)  # fail here, in the flow, if the model cannot load
    return name, handle


def stop_actor(name: str) -> dict[str, int] | None:
    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
    usage = ray.get(handle.usage.remote())
    ray.kill(handle)
    return usage


@dataclass(frozen=True)
class ActorService:
    """The run's model actor as a shard task sees it. Only the name travels to the worker (a
    handle does not outlive its owner's process); the actor is looked up per batch."""

    name: str

    def complete(self, requests: list[Request]) -> list[Completion]:
        handle = ray.get_actor(self.name, namespace=NAMESPACE)
        return ray.get(handle.complete.remote(requests))
