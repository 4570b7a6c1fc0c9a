"""The read API: per-tenant customers, recent errors, daily usage, the tenant list and the /usage
page that shows them. Read-only views of the aggregator's state, scoped to the caller's tenant when
auth is on; ``limit``/``days``/``sort`` are checked and refused with a 400 that names the range.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Config
from .http import HTTPProblem, json_response, problem_response

if TYPE_CHECKING:
    from .app import Exporter

# The /usage page: plain files shipped in the package, served as they are (no build step, no CDN).
_STATIC = {"usage.html": "text/html; charset=utf-8", "usage.js": "text/javascript; charset=utf-8",
           "usage.css": "text/css; charset=utf-8"}
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
                 "Cache-Control": "no-cache"}


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("exporter.server").joinpath("static", name).read_bytes()


CUSTOMER_SORT_KEYS = ("cost_usd", "events", "input_tokens", "output_tokens", "errors", "latest_timestamp", "customer")


class ReadAPI:
    """The read routes of one app. ``config`` is the start-up configuration (sizes the state was
    built with); budgets and tenants come from ``ex.config``, which a reload replaces."""

    def __init__(self, ex: Exporter, config: Config) -> None:
        self.ex = ex
        self.config = config

    def routes(self) -> list[Route]:
        return [
            Route("/v1/tenants/{tenant}/customers", self.get_customers),
            Route("/v1/tenants/{tenant}/errors", self.get_errors),
            Route("/v1/tenants", self.get_tenants),
            Route("/v1/tenants/{tenant}/usage/daily", self.get_daily),
            Route("/usage", self.usage_page),
            Route("/usage/{file}", self.usage_page),
        ]

    def _scoped_tenant(self, request: Request) -> str:
        tenant = request.path_params["tenant"]
        caller = self.ex.auth.tenant_for(request)
        if caller is not None and caller != tenant:
            raise HTTPProblem(403, "forbidden", f"token of tenant {caller!r} cannot read tenant {tenant!r}")
        return tenant

    def _limit(self, request: Request, default: int, maximum: int) -> int:
        raw = request.query_params.get("limit", str(default))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= maximum:
            raise HTTPProblem(400, "bad_request", f"limit must be an integer from 1 to {maximum}")
        return int(raw)

    async def get_customers(self, request: Request) -> Response:
        try:
            tenant = self._scoped_tenant(request)
            sort = request.query_params.get("sort", "cost_usd")
            if sort not in CUSTOMER_SORT_KEYS:
                raise HTTPProblem(400, "bad_request", f"sort must be one of {', '.join(CUSTOMER_SORT_KEYS)}")
            order = request.query_params.get("order", "desc")
            if order not in ("asc", "desc"):
                raise HTTPProblem(400, "bad_request", "order must be asc or desc")
            limit = self._limit(request, 100, 10_000)
        except HTTPProblem as exc:
            return problem_response(exc)
        rows = self.ex.aggregator.customer_rows(tenant, sort, order == "desc", limit)
        return json_response({"tenant": tenant, "customers": rows})

    async def get_errors(self, request: Request) -> Response:
        try:
            tenant = self._scoped_tenant(request)
            limit = self._limit(request, 10, self.config.errors_ring_size)
        except HTTPProblem as exc:
            return problem_response(exc)
        return json_response({"tenant": tenant, "errors": self.ex.aggregator.errors_of(tenant, limit)})

    def _days(self, request: Request) -> int:
        raw = request.query_params.get("days", "30")
        maximum = self.config.usage_daily_days
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= maximum:
            raise HTTPProblem(400, "bad_request", f"days must be an integer from 1 to {maximum} (usage.daily-days)")
        return int(raw)

    def _budget(self, tenant: str) -> float | None:
        configured = self.ex.config.tenants.get(tenant)  # ex.config: a reload may change budgets
        return configured.budget_usd_per_day if configured is not None else None

    async def get_tenants(self, request: Request) -> Response:
        """The tenants the caller may read: its own with auth on, every tenant with usage (or a budget) off."""
        try:
            caller = self.ex.auth.tenant_for(request)
        except HTTPProblem as exc:
            return problem_response(exc)
        if caller is not None:
            names = [caller]
        else:
            names = sorted({tenant for tenant, _ in self.ex.aggregator.customers} | set(self.ex.config.tenants))
        return json_response({"tenants": [{"tenant": name, "budget_usd_per_day": self._budget(name)} for name in names],
                              "recent_errors_kept": self.config.errors_ring_size,
                              "daily_days_kept": self.config.usage_daily_days})

    async def get_daily(self, request: Request) -> Response:
        try:
            tenant = self._scoped_tenant(request)
            days = self._days(request)
            customer = request.query_params.get("customer") or None
            maximum = self.config.limits_max_label_length
            if customer is not None and len(customer) > maximum:
                raise HTTPProblem(400, "bad_request", f"customer must be at most {maximum} characters")
        except HTTPProblem as exc:
            return problem_response(exc)
        return json_response({"tenant": tenant, "customer": customer, "budget_usd_per_day": self._budget(tenant),
                              "daily": self.ex.aggregator.daily_rows(tenant, customer, days)})

    async def usage_page(self, request: Request) -> Response:
        name = request.path_params.get("file", "usage.html")
        media = _STATIC.get(name)
        if media is None:
            return json_response({"error": "not found"}, 404)
        return Response(_static(name), media_type=media, headers=_PAGE_HEADERS)
