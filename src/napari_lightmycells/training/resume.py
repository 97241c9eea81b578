"""What a resumed run may change.

A run resumes exactly where ``last.pt`` left it, so everything that shapes its optimisation (model,
data sampling, batch, learning rates, augmentation, seed, ...) must stay as it was: a change is refused
with a message, before anything starts. What may change: ``epochs`` (the learning-rate schedule is then
re-planned to the new length, see :func:`.schedule.replan`), when to stop (``max_steps``, ``patience``),
where it runs (device, precision, workers, compile) and its outputs (folder, previews, data location).
"""

from __future__ import annotations

from typing import Any

from .config import ConfigError, RunConfig

CHANGEABLE_ON_RESUME = frozenset({
    "resume", "epochs", "max_steps", "patience", "data", "output", "device", "precision", "channels_last",
    "compile", "workers", "preview_every", "save_previews", "preview_count",
})  # fmt: skip


def check_resume(checkpoint: dict[str, Any], config: RunConfig) -> None:
    """Refuse to resume ``checkpoint`` (a ``last.pt``) with a ``config`` that changes a fixed field or
    asks for fewer epochs than it has trained."""
    training_state = checkpoint["training_state"]
    stored = type(config).from_dict(training_state["config"])
    changed = [
        name
        for name in type(config).model_fields
        if name not in CHANGEABLE_ON_RESUME and getattr(stored, name) != getattr(config, name)
    ]
    if changed:
        details = ", ".join(
            f"{name} {getattr(stored, name)!r} -> {getattr(config, name)!r}" for name in changed
        )
        raise ConfigError(
            f"{config.resume} cannot be resumed with other settings ({details}): only "
            f"{', '.join(sorted(CHANGEABLE_ON_RESUME - {'resume'}))} may change. Start a new run instead "
            f"(e.g. --init-encoder {config.resume} to keep its encoder)."
        )
    done = training_state["loop"]["epoch"]
    if config.epochs < done:
        raise ConfigError(
            f"{config.resume} has already trained {done} epochs: epochs must be at least {done}."
        )
