"""Where the policy's keys come from: JWKS URLs, JWKS files and the API key file.

At start every source is read once before the proxy reports ready (a JWKS URL gets
``FETCH_TIMEOUT`` seconds; if it fails the proxy starts anyway and tokens are refused until a
fetch succeeds, which the log says). Afterwards:

* a JWKS URL is fetched again every ``REFRESH`` seconds, and at once when a token names a
  ``kid`` the set lacks (at most every ``tokens.REFETCH_EVERY`` seconds); a failed fetch
  keeps the last good keys, logs the error and counts ``policy_key_errors_total``;
* files (a mounted Secret or ConfigMap) are re-read when their content changes, checked once a
  second like the endpoints files; a bad file keeps the last good keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from sidecarkit.agents.proxy import policies, tokens

__all__ = ["Sources"]

log = logging.getLogger("sidecarkit.agent.proxy.policy")

FETCH_TIMEOUT: Final = 3.0
REFRESH: Final = 300.0
"""Seconds between routine fetches of a JWKS URL (Envoy caches remote JWKS for 5 min)."""
RETRY: Final = 10.0
"""Seconds between fetches while the last one failed."""


class Sources:
    """The key sets and the key file of one policy, and what keeps them fresh."""

    def __init__(self, policy: policies.Policy) -> None:
        self.digests: dict[str, bytes] = {}
        self.errors = 0
        self.reported = 0
        self.fetching: dict[str, asyncio.Task[None]] = {}
        self.listeners: list[Callable[[str], None]] = []
        """Called with an issuer once its key set was fetched again (guards' waiting requests)."""
        self.session: Any = None
        self.updating = asyncio.Lock()
        self._set(policy.authentication, {}, None)
        self.active = self.authenticator
        """The authenticator the guards use: a new one only once its key sets were read."""

    def _set(
        self,
        spec: policies.Authentication | None,
        keysets: dict[str, tokens.KeySet],
        keyfile: tokens.KeyFile | None,
    ) -> None:
        self.spec = spec
        self.providers = spec.jwt if spec is not None else ()
        self.keysets = {
            p.issuer: keysets.get(p.issuer) or tokens.KeySet(p.jwks_url or p.jwks_file or "")
            for p in self.providers
        }
        if keyfile is None and spec is not None and spec.api_keys:
            keyfile = tokens.KeyFile()
        self.keyfile = keyfile
        self.keyfile_path = spec.api_keys.file if spec is not None and spec.api_keys else ""
        self.authenticator = (
            tokens.Authenticator(spec, keysets=self.keysets, keyfile=self.keyfile)
            if spec is not None
            else None
        )

    async def start(self) -> None:
        self.poll()
        fetches = [self._fetch(p) for p in self.providers if p.jwks_url]
        if fetches:
            await asyncio.gather(*fetches)

    async def update(self, policy: policies.Policy) -> tokens.Authenticator | None:
        """The authenticator of ``policy``'s ``authentication``: this one when it is unchanged;
        else a new one, returned once its new key sources were read (as at start). A key set
        whose issuer and source stay is kept (no fetch); the new authenticator's token cache
        starts empty, so tokens of a removed issuer or key, or that no longer meet the new
        audiences, are not accepted from a cache."""
        async with self.updating:  # one change after the other, in the order they came
            spec = policy.authentication
            if spec == self.spec:
                return self.authenticator
            old = {p.issuer: (p.jwks_url, p.jwks_file) for p in self.providers}
            providers = spec.jwt if spec is not None else ()
            kept = {
                p.issuer: self.keysets[p.issuer]
                for p in providers
                if old.get(p.issuer) == (p.jwks_url, p.jwks_file)
            }
            keys = spec.api_keys if spec is not None else None
            same_keys = keys is not None and self.keyfile_path == keys.file
            fresh = [p for p in providers if p.issuer not in kept]
            self._set(spec, kept, self.keyfile if same_keys else None)
            if not same_keys:
                self.digests.pop(self.keyfile_path, None)
            for p in fresh:  # a file another issuer read before is read again for this one
                self.digests.pop(p.jwks_file or "", None)
            self.poll()
            for p in fresh:  # as tasks the ticker sees, so it does not fetch them twice
                if p.jwks_url:
                    self.want(p.issuer)
            fetches = [self.fetching[p.issuer] for p in fresh if p.issuer in self.fetching]
            if fetches:
                await asyncio.gather(*fetches, return_exceptions=True)
            log.info(
                "authentication changed: %d issuer(s) (%d kept with their keys), API keys %s",
                len(self.providers), len(kept), "on" if self.keyfile is not None else "off",
            )  # fmt: skip
            self.active = self.authenticator
            return self.authenticator

    def poll(self) -> None:
        """Re-read the files whose content changed (called once a second)."""
        now = time.monotonic()
        for p in self.providers:
            if p.jwks_file:
                data = self._read(p.jwks_file)
                if data is not None:
                    problem = self.keysets[p.issuer].load(data, now)
                    self._problem(problem)
                    self._forget_tokens(problem)
        if self.keyfile is not None:
            data = self._read(self.keyfile_path)
            if data is not None:
                problem = self.keyfile.load(data.decode(errors="replace"), self.keyfile_path)
                self._problem(problem)
                if not problem and self.authenticator is not None:
                    self.authenticator.key_cache.clear()

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.poll()
        now = time.monotonic()
        for p in self.providers:
            keyset = self.keysets[p.issuer]
            every = RETRY if keyset.error else REFRESH
            if p.jwks_url and (keyset.wanted or now - keyset.fetched >= every):
                self.want(p.issuer)

    def want(self, issuer: str) -> None:
        """Fetch ``issuer``'s key set now unless a fetch is under way."""
        provider = next((p for p in self.providers if p.issuer == issuer), None)
        loop = asyncio.get_running_loop()
        if provider is None:  # the issuer was removed meanwhile: the waiting are decided now
            loop.call_soon(self._arrived, issuer)
            return
        if not provider.jwks_url:  # a file: nothing to fetch, the waiting go on next
            self.keysets[issuer].fetched = time.monotonic()
            loop.call_soon(self._arrived, issuer)
            return
        if issuer in self.fetching:
            return
        task = loop.create_task(self._fetch(provider), name=f"jwks {issuer}")
        self.fetching[issuer] = task
        task.add_done_callback(lambda _: self.fetching.pop(issuer, None))

    async def _fetch(self, provider: policies.JwtProvider) -> None:
        import aiohttp  # noqa: PLC0415 - only for a policy with a JWKS URL

        keyset = self.keysets.get(provider.issuer)
        if keyset is None:  # removed by a change of the policy meanwhile
            return
        keyset.wanted = False
        url = provider.jwks_url or ""
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT))
        try:
            async with self.session.get(url, headers={"accept": "application/json"}) as r:
                if r.status != 200:
                    problem = f"{url}: HTTP {r.status}"
                else:
                    problem = keyset.load(await r.content.read(1 << 20), time.monotonic())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = f"{url}: {exc or type(exc).__name__}"
        if problem:
            keyset.failed(problem, time.monotonic())
        else:
            log.info("key set of %s: %d key(s) from %s", provider.issuer, len(keyset.keys), url)
        self._forget_tokens(problem)
        self._problem(problem)
        self._arrived(provider.issuer)

    def _forget_tokens(self, problem: str) -> None:
        """A key set changed: tokens verified with a key that is gone must not stay accepted
        from the cache (removing a leaked key from the set is how it is revoked)."""
        if not problem and self.authenticator is not None:
            self.authenticator.cache.clear()

    def _arrived(self, issuer: str) -> None:
        for listener in self.listeners:
            listener(issuer)

    def _read(self, path: str) -> bytes | None:
        """The file's bytes when they changed since the last read, else None."""
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as exc:
            problem = f"cannot read {path}: {exc.strerror}"
            if self.digests.get(path) != b"!" + problem.encode():
                self.digests[path] = b"!" + problem.encode()
                self._problem(problem)
            return None
        digest = hashlib.sha256(data).digest()
        if self.digests.get(path) == digest:
            return None
        self.digests[path] = digest
        return data

    def _problem(self, problem: str) -> None:
        if problem:
            self.errors += 1
            log.warning("policy keys: %s; the last good keys stay", problem)

    async def close(self) -> None:
        for task in list(self.fetching.values()):
            task.cancel()
        if self.session is not None:
            await self.session.close()
