"""Third-party scorers, installed as their own packages, found through the entry-point group
``empathy_audit.scorers`` (``importlib.metadata.entry_points``).

A plugin package declares, e.g. in its ``pyproject.toml``::

    [project.entry-points."empathy_audit.scorers"]
    warmth = "warmth_scorer:WarmthScorer"

The entry point names a class or a factory. It is called with the audit spec (an ``AuditSpec``,
or None when listing) when it takes an argument, with nothing otherwise, and must return a scorer
(:mod:`audit.scorers.base`) that declares its measures as ``declared_measures``, a tuple of
:class:`audit.scorers.measures.Measure`. Constructing it must be cheap: load models on first use.

A plugin that cannot be imported, constructed or checked gives one :class:`AuditError` naming its
distribution; the built-in scorers never import a plugin. The scorer's stored info (``scorer_info``)
records the distribution and its version, and the measure declarations.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import AuditError
from .measures import Measure, measure_dicts, names

ENTRY_POINT_GROUP = "empathy_audit.scorers"


def plugin_entry_points() -> dict[str, list[EntryPoint]]:
    """Installed scorer entry points by name (more than one when two distributions claim a name)."""
    out: dict[str, list[EntryPoint]] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value, distribution_of(ep))
        if key not in seen:
            seen.add(key)
            out.setdefault(ep.name, []).append(ep)
    return out


def distribution_of(ep: EntryPoint) -> str:
    """'NAME VERSION' of the distribution that installed ``ep``."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


class PluginScorer:
    """A third-party scorer as the pipeline sees it: the plugin's object, checked, with its
    distribution and measure declarations added to ``info()``. Other attributes (``uses_store``,
    ``batch_size``, ``reads_post``) are the plugin's own."""

    def __init__(self, inner: Any, name: str, distribution: str, declared: tuple[Measure, ...]):
        self._inner = inner
        self.name = name
        self.distribution = distribution
        self.declared_measures = declared
        self.measures = names(declared)
        doc = (getattr(inner, "description", None) or inspect.getdoc(type(inner)) or "").strip()
        self.description = doc.splitlines()[0] if doc else f"scorer from {distribution}"

    def __getattr__(self, attr: str) -> Any:
        if attr == "_inner":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(attr)
        return getattr(self._inner, attr)

    def info(self) -> dict[str, Any]:
        info = dict(self._call("info"))
        info.update(name=self.name, distribution=self.distribution, measures=measure_dicts(self.declared_measures))
        return info

    def score(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("score", *args, **kwargs)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._inner, method)(*args, **kwargs)
        except AuditError:
            raise
        except Exception as exc:
            raise AuditError(f"scorer plugin {self.name!r} ({self.distribution}) failed in {method}(): "
                             f"{type(exc).__name__}: {exc}", where=f"entry point {ENTRY_POINT_GROUP}: {self.name}",
                             fix=f"report it to the authors of {self.distribution}; scores stored so far are kept") from exc


def load_plugin(eps: list[EntryPoint], spec: Any = None) -> PluginScorer:
    """Import, construct and check the scorer of the entry point(s) claiming one name."""
    ep = eps[0]
    dist = distribution_of(ep)
    where = f"entry point {ENTRY_POINT_GROUP}: {ep.name} = {ep.value} (distribution {dist})"
    project = dist.rsplit(" ", 1)[0]
    if len(eps) > 1:
        raise AuditError(f"scorer name {ep.name!r} is claimed by " + " and ".join(distribution_of(e) for e in eps),
                         where=f"entry point group {ENTRY_POINT_GROUP}",
                         fix="uninstall one of them (pip uninstall NAME)")

    def broken(what: str, fix: str | None = None) -> AuditError:
        return AuditError(f"scorer plugin {ep.name!r} from {dist} {what}", where=where,
                          fix=fix or f"fix or reinstall {project}, or uninstall it (pip uninstall {project}); "
                                     "the built-in scorers are not affected")

    try:
        factory = ep.load()
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is the plugin's
        raise broken(f"cannot be imported: {type(exc).__name__}: {exc}") from None
    try:
        takes_spec = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        takes_spec = True
    try:
        inner = factory(spec) if takes_spec else factory()
    except AuditError as exc:
        raise AuditError(f"scorer plugin {ep.name!r} from {dist}: {exc.what}", where=exc.where or where,
                         fix=exc.fix) from None
    except Exception as exc:  # noqa: BLE001
        raise broken(f"cannot be constructed: {type(exc).__name__}: {exc}") from None

    own = getattr(inner, "name", ep.name)
    if own != ep.name:
        raise broken(f"builds a scorer named {own!r}", fix=f"name the entry point and the scorer alike ({own!r})")
    for method in ("info", "score"):
        if not callable(getattr(inner, method, None)):
            raise broken(f"has no {method}() method", fix="implement the scorer protocol (docs/scorers.md)")
    declared = getattr(inner, "declared_measures", None)
    if not declared or not isinstance(declared, (tuple, list)) or not all(isinstance(m, Measure) for m in declared):
        raise broken("does not declare its measures",
                     fix="set declared_measures = (Measure(name, label, kind=..., ...), ...) on the scorer "
                         "(from audit.scorers.measures import Measure)")
    declared = tuple(declared)
    if len(set(names(declared))) != len(declared):
        raise broken(f"declares a measure twice: {list(names(declared))}")
    stated = getattr(inner, "measures", None)
    if stated is not None and tuple(stated) != names(declared):
        raise broken(f"has measures {tuple(stated)} but declares {names(declared)}",
                     fix="leave measures out, or list the names of declared_measures in the same order")
    return PluginScorer(inner, ep.name, dist, declared)


__all__ = ["ENTRY_POINT_GROUP", "PluginScorer", "distribution_of", "load_plugin", "plugin_entry_points"]
