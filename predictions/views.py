"""REST endpoints of the predictions app: scores, real-time scoring, the model registry and runs."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from churnsite.permissions import IsStaffOrServiceClient
from customers.models import Customer
from predictions.models import ModelVersion, RiskTier
from predictions.selectors import latest_scores, model_versions, scoring_runs, training_runs
from predictions.serializers import (
    ChurnScoreSerializer,
    ModelVersionSerializer,
    RealtimeScoreSerializer,
    ScoringRunSerializer,
    TrainingRunSerializer,
)
from predictions.services import model_version_promote, model_version_rollback
from predictions.services.scoring import ChampionUnavailable, customer_score_now
from predictions.services.training import training_run_request


@extend_schema(parameters=[OpenApiParameter("risk_tier", str, enum=RiskTier.values)])
class LatestScoreListView(generics.ListAPIView):
    """The newest score of each customer, highest risk first; filter with ``?risk_tier=high``."""

    permission_classes = [IsStaffOrServiceClient]
    serializer_class = ChurnScoreSerializer
    ordering_fields = ["probability", "as_of", "created_at", "customer"]

    def get_queryset(self):  # noqa: ANN201
        queryset = latest_scores()
        tier = self.request.query_params.get("risk_tier")
        return queryset.filter(risk_tier=tier) if tier else queryset


class RealtimeScoreView(APIView):
    """Score one customer on their data up to now with the champion (nothing is stored)."""

    permission_classes = [IsStaffOrServiceClient]
    serializer_class = RealtimeScoreSerializer
    throttle_scope = "realtime-score"

    @extend_schema(
        request=None,
        responses={200: RealtimeScoreSerializer, 503: OpenApiResponse(description="No champion model to score with.")},
    )
    def post(self, request: Request, pk: int) -> Response:
        customer = get_object_or_404(Customer, pk=pk)
        try:
            result = customer_score_now(customer=customer)
        except ChampionUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(RealtimeScoreSerializer(result).data)


class ModelVersionListView(generics.ListAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = ModelVersionSerializer
    ordering_fields = ["created_at", "trained_at", "promoted_at", "name", "status"]

    def get_queryset(self):  # noqa: ANN201
        return model_versions().prefetch_related("audit_entries")


class ModelVersionDetailView(generics.RetrieveAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = ModelVersionSerializer

    def get_queryset(self):  # noqa: ANN201
        return model_versions().prefetch_related("audit_entries")


class ModelVersionPromoteView(APIView):
    """Make this model the champion (staff decision, audited); the next scoring uses it."""

    permission_classes = [IsAdminUser]
    serializer_class = ModelVersionSerializer

    @extend_schema(
        request=None, responses={200: ModelVersionSerializer, 409: OpenApiResponse(description="Not promotable.")}
    )
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        try:
            version = model_version_promote(model_version=version, actor=request.user.get_username())
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version).data)


class ModelVersionRollbackView(APIView):
    """Give the champion role back to the previous champion (audited); the next scoring uses it."""

    permission_classes = [IsAdminUser]
    serializer_class = ModelVersionSerializer

    @extend_schema(
        request=None,
        responses={200: ModelVersionSerializer, 409: OpenApiResponse(description="Nothing to roll back to.")},
    )
    def post(self, request: Request) -> Response:
        try:
            version = model_version_rollback(actor=request.user.get_username())
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version).data)


@extend_schema_view(post=extend_schema(responses={202: TrainingRunSerializer}))
class TrainingRunListView(generics.ListCreateAPIView):
    """List training runs, or request one (it is trained by a gpu worker; poll its progress here)."""

    permission_classes = [IsAdminUser]
    serializer_class = TrainingRunSerializer
    ordering_fields = ["created_at", "finished_at", "status"]

    def get_queryset(self):  # noqa: ANN201
        return training_runs()

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            run = training_run_request(
                mode=data["mode"],
                as_of=data.get("as_of"),
                horizon_days=data["horizon_days"],
                lead_days=data.get("lead_days", 0),
                actor=request.user.get_username(),
            )
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        run.refresh_from_db()
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ScoringRunListView(generics.ListAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = ScoringRunSerializer
    ordering_fields = ["created_at", "finished_at", "as_of", "status"]

    def get_queryset(self):  # noqa: ANN201
        return scoring_runs()
