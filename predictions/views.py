"""REST endpoints of the predictions app: scores, real-time scoring, the model registry and runs."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from churnsite.api import KeysetPagination, StableOrderingFilter, query_choice, query_float, query_int
from churnsite.idempotency import IDEMPOTENCY_PARAMETER, idempotent_response, with_location
from churnsite.permissions import IsStaff, IsStaffOrServiceClient
from customers.models import Customer
from predictions.models import ChurnScore, ModelStatus, ModelVersion, RiskTier, RunStatus, TrainingRun
from predictions.selectors import (
    champion_model_version,
    customer_scores,
    latest_scores_for_pages,
    model_versions,
    scoring_runs,
    training_runs,
)
from predictions.serializers import (
    ChurnScoreSerializer,
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    RealtimeScoreSerializer,
    ScoringRunSerializer,
    TrainingRunSerializer,
)
from predictions.services import model_version_promote, model_version_rollback
from predictions.services.scoring import ChampionUnavailable, customer_score_now
from predictions.services.training import TrainingError, training_run_request

logger = logging.getLogger(__name__)


@extend_schema(
    parameters=[
        OpenApiParameter("risk_tier", str, enum=RiskTier.values),
        OpenApiParameter("customer", int, description="Customer id."),
        OpenApiParameter("customer_external_id", str, description="The customer's id in your systems."),
        OpenApiParameter("min_probability", float, description="Only scores at or above this probability (0-1)."),
    ]
)
class LatestScoreListView(generics.ListAPIView):
    """The newest score of each customer, highest risk first; with ``customer`` or ``customer_external_id``, that
    customer's every score, newest first. Filters: risk_tier, min_probability. Paged by cursor (follow ``next``): no
    page counts every customer's newest score. Ties are broken by id. By ``probability`` or ``customer`` (either
    way), ``-as_of`` or ``-created_at`` a page is read through an index from its cursor; the oldest first (``as_of``,
    ``created_at``) and orderings by several fields sort every customer's newest score for each page."""

    staff_permissions = {"GET": ("predictions.view_churnscore",)}
    permission_classes = [IsStaffOrServiceClient]
    serializer_class = ChurnScoreSerializer
    pagination_class = KeysetPagination
    ordering_fields = ["probability", "as_of", "created_at", "customer"]

    def get_queryset(self):  # noqa: ANN201
        params = self.request.query_params
        customer_id, external_id = query_int(params, "customer"), params.get("customer_external_id")
        if customer_id is not None or external_id:  # one customer: the whole history, newest first
            queryset = customer_scores(customer_id=customer_id, external_id=external_id or None)
        else:
            ordering = StableOrderingFilter().get_ordering(self.request, ChurnScore.objects.none(), self)
            queryset = latest_scores_for_pages(ordering=ordering or ("-probability",))
        if tier := query_choice(params, "risk_tier", RiskTier.values):
            queryset = queryset.filter(risk_tier=tier)
        if (minimum := query_float(params, "min_probability", low=0.0, high=1.0)) is not None:
            queryset = queryset.filter(probability__gte=minimum)
        return queryset


class RealtimeScoreView(APIView):
    """Score one customer on their data up to now with the champion (nothing is stored)."""

    staff_permissions = {"POST": ("predictions.add_churnscore",)}
    permission_classes = [IsStaffOrServiceClient]
    serializer_class = RealtimeScoreSerializer
    throttle_scope = "realtime-score"

    @extend_schema(
        request=None,
        responses={
            200: RealtimeScoreSerializer,
            409: OpenApiResponse(
                description="The customer has not signed up yet, or is not one the champion scores (marked churned, "
                "or without a qualifying order for a model trained on activity): as scoring runs leave them out."
            ),
            503: OpenApiResponse(description="No champion model to score with."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        return _score_now(get_object_or_404(Customer, pk=pk))


class RealtimeScoreByExternalIdView(APIView):
    """Score one customer, named by their id in your systems, on their data up to now (nothing is stored).

    The external id goes in the path percent-encoded; it may contain slashes.
    """

    staff_permissions = {"POST": ("predictions.add_churnscore",)}
    permission_classes = [IsStaffOrServiceClient]
    serializer_class = RealtimeScoreSerializer
    throttle_scope = "realtime-score"

    @extend_schema(
        request=None,
        responses={
            200: RealtimeScoreSerializer,
            409: OpenApiResponse(
                description="The customer has not signed up yet, or is not one the champion scores (marked churned, "
                "or without a qualifying order for a model trained on activity): as scoring runs leave them out."
            ),
            503: OpenApiResponse(description="No champion model to score with."),
        },
    )
    def post(self, request: Request, external_id: str) -> Response:
        return _score_now(get_object_or_404(Customer, external_id=external_id))


def _score_now(customer: Customer) -> Response:
    try:
        result = customer_score_now(customer=customer)
    except ChampionUnavailable as exc:
        # The reason can name server paths: it goes to the log, not to API clients.
        logger.warning("real-time score of customer %s refused: %s", customer.pk, exc)
        message = (
            "There is no champion model yet."
            if champion_model_version() is None
            else "The champion model cannot be loaded; the reason is in the server log."
        )
        return Response({"detail": message}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    except ValueError as exc:  # not signed up yet, or not one the champion scores
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return Response(RealtimeScoreSerializer(result).data)


_STATUS_FILTER = OpenApiParameter("status", str, enum=RunStatus.values)


@extend_schema(parameters=[OpenApiParameter("status", str, enum=ModelStatus.values)])
class ModelVersionListView(generics.ListAPIView):
    """The model registry, newest first; ``?status=champion`` finds the model that scores now."""

    staff_permissions = {"GET": ("predictions.view_modelversion",)}
    permission_classes = [IsStaff]
    serializer_class = ModelVersionSerializer
    ordering_fields = ["created_at", "trained_at", "promoted_at", "name", "status"]

    def get_queryset(self):  # noqa: ANN201
        queryset = model_versions().prefetch_related("audit_entries")
        if model_status := query_choice(self.request.query_params, "status", ModelStatus.values):
            queryset = queryset.filter(status=model_status)
        return queryset


class ModelVersionDetailView(generics.RetrieveAPIView):
    """One model version with its model card (holdout curves, lift and baselines; empty for older models)."""

    staff_permissions = {"GET": ("predictions.view_modelversion",)}
    permission_classes = [IsStaff]
    serializer_class = ModelVersionDetailSerializer

    def get_queryset(self):  # noqa: ANN201
        return model_versions().prefetch_related("audit_entries")


class ModelVersionPromoteView(APIView):
    """Make this model the champion (staff decision, audited); the next scoring uses it."""

    staff_permissions = {"POST": ("predictions.change_modelversion",)}
    permission_classes = [IsStaff]
    serializer_class = ModelVersionSerializer

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER],
        request=None,
        responses={200: ModelVersionSerializer, 409: OpenApiResponse(description="Not promotable.")},
    )
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)

        def handler() -> tuple[int, object]:
            try:
                promoted = model_version_promote(model_version=version, actor=request.user.get_username())
            except ValueError as exc:
                return status.HTTP_409_CONFLICT, {"detail": str(exc)}
            return status.HTTP_200_OK, ModelVersionSerializer(promoted).data

        return idempotent_response(request, handler)


class ModelVersionRollbackView(APIView):
    """Give the champion role back to the previous champion (audited); the next scoring uses it."""

    staff_permissions = {"POST": ("predictions.change_modelversion",)}
    permission_classes = [IsStaff]
    serializer_class = ModelVersionSerializer

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER],
        request=None,
        responses={200: ModelVersionSerializer, 409: OpenApiResponse(description="Nothing to roll back to.")},
    )
    def post(self, request: Request) -> Response:
        """A retried rollback with the same Idempotency-Key replays the first answer instead of rolling back again
        (which would undo it)."""

        def handler() -> tuple[int, object]:
            try:
                version = model_version_rollback(actor=request.user.get_username())
            except ValueError as exc:
                return status.HTTP_409_CONFLICT, {"detail": str(exc)}
            return status.HTTP_200_OK, ModelVersionSerializer(version).data

        return idempotent_response(request, handler)


@extend_schema_view(
    get=extend_schema(parameters=[_STATUS_FILTER]),
    post=extend_schema(parameters=[IDEMPOTENCY_PARAMETER], responses={202: TrainingRunSerializer}),
)
class TrainingRunListView(generics.ListCreateAPIView):
    """List training runs, or request one (it is trained by a gpu worker; poll its progress here)."""

    staff_permissions = {"GET": ("predictions.view_trainingrun",), "POST": ("predictions.add_trainingrun",)}
    permission_classes = [IsStaff]
    serializer_class = TrainingRunSerializer
    ordering_fields = ["created_at", "finished_at", "status"]

    def get_queryset(self):  # noqa: ANN201
        return _with_status(training_runs(), self.request)

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        """A retry with the same Idempotency-Key gets the first run back instead of requesting a second one.

        Where the training runs in the request (Celery eager, the embedded default) and fails, the answer is the
        run, failed with its error, as a worker's failure would show when polled: not a 500."""

        def handler() -> tuple[int, object]:
            serializer = self.get_serializer(data=request.data)
            if not serializer.is_valid():
                return status.HTTP_400_BAD_REQUEST, serializer.errors
            data = serializer.validated_data
            try:
                run = training_run_request(
                    mode=data.get("mode", settings.CHURN_DEFAULT_MODE),
                    as_of=data.get("as_of"),
                    horizon_days=data.get("horizon_days", settings.CHURN_HORIZON_DAYS),
                    lead_days=data.get("lead_days", 0),
                    actor=request.user.get_username(),
                    options={"labels_from": data["labels_from"]} if "labels_from" in data else None,
                )
            except ValueError as exc:
                return status.HTTP_400_BAD_REQUEST, {"detail": str(exc)}
            except TrainingError as exc:  # trained in this request (eager) and failed: the run says why
                run = TrainingRun.objects.get(pk=exc.training_run_id)
            run.refresh_from_db()
            return status.HTTP_202_ACCEPTED, TrainingRunSerializer(run).data

        try:
            response = idempotent_response(request, handler, created_view="training-run-detail")
        except TrainingError as exc:  # raised as the request's transaction committed (with an Idempotency-Key)
            run = TrainingRun.objects.get(pk=exc.training_run_id)
            response = Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
            return with_location(request, response, "training-run-detail")
        if response.status_code == status.HTTP_202_ACCEPTED and isinstance(response.data, dict):
            # The run as it is now: with an Idempotency-Key the body was made before the commit that ran an eager
            # training, and a replay of the key would otherwise say "pending" forever.
            run = TrainingRun.objects.filter(pk=response.data.get("id")).first()
            if run is not None:
                response.data = TrainingRunSerializer(run).data
        return response


class TrainingRunDetailView(generics.RetrieveAPIView):
    """One training run: poll a requested run here (its answer's Location) until it succeeded or failed."""

    staff_permissions = {"GET": ("predictions.view_trainingrun",)}
    permission_classes = [IsStaff]
    serializer_class = TrainingRunSerializer

    def get_queryset(self):  # noqa: ANN201
        return training_runs()


@extend_schema(parameters=[_STATUS_FILTER])
class ScoringRunListView(generics.ListAPIView):
    staff_permissions = {"GET": ("predictions.view_scoringrun",)}
    permission_classes = [IsStaff]
    serializer_class = ScoringRunSerializer
    ordering_fields = ["created_at", "finished_at", "as_of", "status"]

    def get_queryset(self):  # noqa: ANN201
        return _with_status(scoring_runs(), self.request)


def _with_status(runs: QuerySet, request: Request) -> QuerySet:
    run_status = query_choice(request.query_params, "status", RunStatus.values)
    return runs.filter(status=run_status) if run_status else runs
