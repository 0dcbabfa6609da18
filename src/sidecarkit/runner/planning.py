"""From manifests to what the runner starts: the pod, its volumes, each container's launch.

Volumes. ``emptyDir`` is a directory per pod (kept across container restarts, removed at the
end unless kept); ``hostPath`` is the path itself; ``configMap`` and ``secret`` are directories
of files from the objects of the same manifest stream; ``downwardAPI`` writes its items
(``metadata.labels`` and ``metadata.annotations`` as ``key="value"`` lines, or single fields).

Mount paths. All containers share this machine's filesystem, so each container's mount paths
are mapped to the volume's directory and rewritten in that container's command, args, env
values and working directory. The exact rule: an occurrence of a mount path is replaced when
it starts the string or follows ``=``, ``:``, ``,``, a blank or a quote, and is followed by the
end of the string, ``/``, a blank, a quote, ``:`` or ``,``; longer mount paths are tried first;
a ``subPath`` mount maps to that path inside the volume. Anything else (a path a program builds
at run time from pieces) is not seen, which is the limit of running without mount namespaces.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sidecarkit.k8s import workloads
from sidecarkit.runner import expanding, running, specs

__all__ = ["OWN_IMAGES", "Plan", "plan"]

#: Images that are this project's own: their containers run this installation of sidecarkit.
OWN_IMAGES: Final = ("ghcr.io/sidecarkit/sidecarkit", "sidecarkit")


class Plan:
    """Everything needed to start the pod."""

    def __init__(
        self, pod: specs.PodSpec, launches: dict[str, running.Launch], volumes: dict[str, str]
    ) -> None:
        self.pod = pod
        self.launches = launches
        self.volumes = volumes


def _own(image: str) -> bool:
    name = image.split("@", 1)[0]
    repository = name.rsplit(":", 1)[0] if "/" in name else name.split(":", maxsplit=1)[0]
    return repository in OWN_IMAGES or repository.endswith("/sidecarkit")


def _template(documents: Sequence[Any]) -> tuple[Mapping[str, Any], str, str]:
    """The first pod template: (metadata and spec, its path, its ``kubectl explain`` path)."""
    for _index, doc in enumerate(documents, start=1):
        if isinstance(doc, dict) and workloads.template_path(doc) is not None:
            template = workloads.pod_template(doc)
            if template is not None:
                where = (
                    "spec"
                    if doc.get("kind") == "Pod"
                    else ".".join(workloads.template_path(doc) or ()) + ".spec"
                )
                metadata: Any = template.get("metadata") or {}
                outer = doc.get("metadata")
                if isinstance(metadata, dict) and isinstance(outer, dict):
                    metadata = dict(metadata)
                    if doc.get("kind") != "Pod":
                        metadata.setdefault("name", outer.get("name"))
                    metadata.setdefault("namespace", outer.get("namespace"))
                explain = str(doc.get("kind")).lower()
                if doc.get("kind") != "Pod":
                    explain += "." + where[: -len(".spec")]
                return {"metadata": metadata, "spec": template["spec"]}, where, explain
    raise specs.SpecError(["no Pod or workload with a pod template in the manifests"])


def join(base: str, *parts: str) -> str:
    """``str(PurePosixPath(base, *parts))``, without importing pathlib before the first container.

    A later absolute part starts over; empty and ``.`` components go; ``..`` stays, as pathlib
    leaves it.
    """
    joined = (base, *parts)
    start = 0
    for i, part in enumerate(joined):
        if part.startswith("/"):
            start = i
    names = "/".join(n for part in joined[start:] for n in part.split("/") if n not in ("", "."))
    anchor = joined[start]
    if anchor.startswith("/"):
        # Exactly two leading slashes are kept, as POSIX leaves their meaning to the system.
        two = anchor.startswith("//") and not anchor.startswith("///")
        return ("//" if two else "/") + names
    return names or "."


def _write_files(directory: str, files: Mapping[str, str], *, mode: int = 0o644) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, content in files.items():
        path = join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(path, mode)


def _volumes(
    pod: specs.PodSpec,
    root: str,
    objects: expanding.Objects,
    where: str,
) -> dict[str, str]:
    paths: dict[str, str] = {}
    problems: list[str] = []
    for i, volume in enumerate(pod.volumes):
        path = join(root, "volumes", volume.name)
        source = volume.source
        if volume.kind == "emptyDir":
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o777)
        elif volume.kind == "hostPath":
            path = join(str(source.get("path") or "/"))
        elif volume.kind in ("configMap", "secret"):
            name = str(source.get("name") or source.get("secretName") or "")
            table = objects.config_maps if volume.kind == "configMap" else objects.secrets
            data = table.get(name)
            if data is None and not source.get("optional"):
                problems.append(
                    f"{where}.volumes[{i}].{volume.kind}: no {volume.kind} {name!r} "
                    "in the manifests; add it or mark it optional"
                )
                continue
            items = source.get("items")
            files = dict(data or {})
            if isinstance(items, list):
                files = {
                    str(it.get("path")): files.get(str(it.get("key")), "")
                    for it in items
                    if isinstance(it, dict)
                }
            _write_files(path, files, mode=0o600 if volume.kind == "secret" else 0o644)
        elif volume.kind == "downwardAPI":
            files = {}
            for item in source.get("items") or ():
                field = str((item.get("fieldRef") or {}).get("fieldPath") or "")
                if field in ("metadata.labels", "metadata.annotations"):
                    pairs = pod.labels if field == "metadata.labels" else pod.annotations
                    files[str(item.get("path"))] = "".join(
                        f'{k}="{v}"\n' for k, v in sorted(pairs.items())
                    )
                else:
                    files[str(item.get("path"))] = {
                        "metadata.name": pod.name,
                        "metadata.namespace": pod.namespace,
                    }.get(field, "")
            _write_files(path, files)
        else:
            os.makedirs(path, exist_ok=True)  # projected and others: an empty directory
        paths[volume.name] = path
    if problems:
        raise specs.SpecError(problems)
    return paths


def _ports_in_use(pod: specs.PodSpec, where: str) -> list[str]:
    """Declared ports that something on this machine already holds.

    Containers share this machine's network here, so a declared port another process
    listens on would only fail later, inside the app, with a message about an address in
    use; this names the port, the container and the fix before anything starts.
    """
    problems = []
    groups = (("initContainers", pod.init_containers), ("containers", pod.containers))
    for key, group in groups:
        for i, container in enumerate(group):
            if key == "initContainers" and not container.sidecar:
                continue
            for port, protocol in container.ports:
                kind = socket.SOCK_DGRAM if protocol == "UDP" else socket.SOCK_STREAM
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        probe.bind(("0.0.0.0", port))
                    except OSError as exc:
                        if exc.errno != errno.EADDRINUSE:
                            continue  # a privileged port, say: the app will say so itself
                        problems.append(
                            f"{where}.{key}[{i}].ports: port {port}/{protocol} of container "
                            f"{container.name!r} is already in use on this machine, which "
                            "the pod's containers share here; stop what holds it "
                            f"(`ss -lntup 'sport = :{port}'` shows it) or change containerPort"
                        )
    return problems


def _rewriter(mounts: Sequence[tuple[str, str]]) -> Any:
    if not mounts:
        return lambda text: text
    ordered = sorted(mounts, key=lambda m: -len(m[0]))
    pattern = re.compile(
        r"(?:^|(?<=[=:, \t'\"]))("
        + "|".join(re.escape(m) for m, _ in ordered)
        + r")(?=$|[/ \t'\":,])"
    )
    table = dict(ordered)
    return lambda text: pattern.sub(lambda m: table[m.group(1)], text)


def plan(
    documents: Sequence[Any],
    *,
    root: str | os.PathLike[str],
    commands: Mapping[str, Sequence[str]],
    host: expanding.Host,
    lenient: bool = False,
) -> Plan:
    """The runnable plan of the first pod template in ``documents``; SpecError if none."""
    template, where, explain = _template(documents)
    pod = specs.read_pod(template, where=where, explain=explain, lenient=lenient)
    busy = _ports_in_use(pod, where)
    if busy:
        raise specs.SpecError(busy)
    objects = expanding.Objects.from_documents(documents)
    volumes = _volumes(pod, os.fspath(root), objects, where)
    own = [sys.executable, "-m", "sidecarkit"]
    launches: dict[str, running.Launch] = {}
    problems: list[str] = []
    rewritten: dict[str, specs.ContainerSpec] = {}
    for key, group in (("initContainers", pod.init_containers), ("containers", pod.containers)):
        for i, container in enumerate(group):
            path = f"{where}.{key}[{i}]"
            mounts = [
                (
                    m.path.rstrip("/") or "/",
                    join(volumes[m.name], m.sub_path) if m.sub_path else volumes[m.name],
                )
                for m in container.mounts
                if m.name in volumes
            ]
            rewrite = _rewriter(mounts)
            try:
                env = expanding.environment(container, pod, where=path, objects=objects, host=host)
                argv = expanding.command_line(
                    container,
                    env,
                    where=path,
                    override=commands.get(container.name),
                    own_image=_own(container.image),
                    own_command=["sidecarkit"],
                )
            except specs.SpecError as exc:
                problems.extend(exc.problems)
                continue
            if argv and argv[0] == "sidecarkit" and _own(container.image):
                argv = [*own, *argv[1:]]
            env = {k: rewrite(v) for k, v in env.items()}
            base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ", "TMPDIR")}
            base.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
            full_env = {**base, "HOSTNAME": pod.name, **env}
            cwd = rewrite(container.working_dir) if container.working_dir else None
            launches[container.name] = running.Launch([rewrite(a) for a in argv], full_env, cwd)
            rewritten[container.name] = _handlers_rewritten(container, rewrite)
    if problems:
        raise specs.SpecError(problems)
    pod = pod._replace(
        init_containers=tuple(rewritten[c.name] for c in pod.init_containers),
        containers=tuple(rewritten[c.name] for c in pod.containers),
    )
    return Plan(pod, launches, volumes)


def _handlers_rewritten(container: specs.ContainerSpec, rewrite: Any) -> specs.ContainerSpec:
    """Exec probes and hooks run "inside" the container: their commands see its mounts too."""

    def handler(h: specs.Handler | None) -> specs.Handler | None:
        if h is None or h.kind != "exec":
            return h
        return h._replace(command=tuple(rewrite(part) for part in h.command))

    def probe(p: specs.Probe | None) -> specs.Probe | None:
        if p is None:
            return None
        new = handler(p.handler)
        assert new is not None
        return p._replace(handler=new)

    return container._replace(
        startup=probe(container.startup),
        liveness=probe(container.liveness),
        readiness=probe(container.readiness),
        post_start=handler(container.post_start),
        pre_stop=handler(container.pre_stop),
    )
