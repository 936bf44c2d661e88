"""Admin helpers for large tables: a paginator whose count is bounded, and list filters that never read a whole
table for their choices."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.contrib import admin
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

__all__ = ["EstimatedCountPaginator", "recent_values_filter"]


class EstimatedCountPaginator(Paginator):
    """Counts at most ``exact_below`` rows (``SELECT COUNT(*)`` of a ``LIMIT``ed query), filtered or not; above
    that, PostgreSQL's planner estimate is used (the table's for an unfiltered list, the query plan's otherwise), and
    every page past it can still be opened (the estimate may fall short). Without a planner to ask, the exact count.

    ``SELECT count(*)`` over tens of millions of events takes seconds on every page view; the page
    links only need an approximate total.
    """

    exact_below = 100_000
    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        bounded = queryset.order_by()[: self.exact_below].count()
        if bounded < self.exact_below:
            return bounded
        estimate = _planner_rows(queryset)
        if estimate is None or estimate < 0:  # no planner to ask (SQLite), or a table never analysed
            return super().count
        self.count_is_estimate = True
        return max(bounded, estimate)

    def validate_number(self, number: object) -> int:
        """Past an estimated count there may still be rows: any page from 1 on can be asked for."""
        self.count  # noqa: B018 - computes whether the count is an estimate
        if not self.count_is_estimate:
            return super().validate_number(number)
        try:
            page = int(str(number))
        except ValueError:
            raise PageNotAnInteger("That page number is not an integer") from None
        if page < 1:
            raise EmptyPage("That page number is less than 1")
        return page

    def page(self, number: object) -> Page:
        number = self.validate_number(number)
        if not self.count_is_estimate:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)


def _planner_rows(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows of ``queryset`` (None elsewhere)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        if not queryset.query.where:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [queryset.model._meta.db_table]
            )
            row = cursor.fetchone()
            return int(row[0]) if row and row[0] is not None else None
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


def recent_values_filter(
    field: str,
    *,
    title: str | None = None,
    parameter: str | None = None,
    known: Iterable[str] = (),
    sample_size: int = 10_000,
) -> type[admin.SimpleListFilter]:
    """A list filter on ``field`` offering ``known`` values plus those of the newest ``sample_size`` rows: no
    ``SELECT DISTINCT`` over the whole table on every page view (Django's own filter on a field without choices)."""
    known_values = tuple(known)

    class RecentValuesFilter(admin.SimpleListFilter):
        parameter_name = parameter or field

        def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
            recent = model_admin.model.objects.order_by("-pk").values_list(field, flat=True)[:sample_size]
            return [(value, value or "(none)") for value in sorted(set(known_values) | set(recent))]

        def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
            return queryset if self.value() is None else queryset.filter(**{field: self.value()})

    RecentValuesFilter.title = title or field.replace("__", " ").replace("_", " ")
    RecentValuesFilter.__name__ = f"Recent{field.title().replace('_', '')}Filter"
    return RecentValuesFilter
