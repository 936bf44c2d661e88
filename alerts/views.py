"""Views of the alerts app: the REST API (staff; service clients read alerts) and the customer's one-click
unsubscribe page (no login)."""

from __future__ import annotations

from django.core import signing
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts.models import ActionKind, AlertRule, AlertStatus, InterventionStatus
from alerts.selectors import alert_rule_uplift, alert_rules, alerts_queue, interventions_list
from alerts.serializers import (
    AlertRuleSerializer,
    AlertSerializer,
    AlertTransitionSerializer,
    AlertUpdateSerializer,
    InterventionSerializer,
    UpliftReportSerializer,
)
from alerts.services import (
    AlertTransitionError,
    CouponNotAllowed,
    alert_rule_create,
    alert_rule_update,
    alert_send_coupon,
    alert_transition,
    alert_update,
    unsubscribe_customer,
)
from churnsite.api import query_bool, query_choice, query_int
from churnsite.idempotency import IDEMPOTENCY_PARAMETER, idempotent_response
from churnsite.permissions import IsStaff, IsStaffOrServiceClient, IsStaffOrServiceClientReadOnly
from customers.models import Customer
from predictions.models import RiskTier


def _actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


@extend_schema_view(
    get=extend_schema(parameters=[OpenApiParameter("active", bool, description="Only (in)active rules.")])
)
class AlertRuleListView(generics.ListAPIView):
    """GET: the rules (filter: active). POST: create a rule (Idempotency-Key honoured)."""

    staff_permissions = {"GET": ("alerts.view_alertrule",), "POST": ("alerts.add_alertrule",)}
    permission_classes = [IsStaff]
    serializer_class = AlertRuleSerializer
    ordering_fields = ["name", "created_at", "updated_at"]

    def get_queryset(self):  # noqa: ANN201 - DRF signature
        return alert_rules(active=query_bool(self.request.query_params, "active"))

    @extend_schema(parameters=[IDEMPOTENCY_PARAMETER], responses={201: AlertRuleSerializer})
    def post(self, request: Request) -> Response:
        def handler() -> tuple[int, object]:
            serializer = AlertRuleSerializer(data=request.data)
            if not serializer.is_valid():
                return 400, serializer.errors
            try:
                rule = alert_rule_create(actor=_actor(request), **serializer.validated_data)
            except ValidationError as error:  # model constraints spanning fields, checked by full_clean
                return 400, error.message_dict
            return 201, AlertRuleSerializer(rule).data

        return idempotent_response(request, handler, created_view="alert-rule-detail")


class AlertRuleDetailView(generics.RetrieveAPIView):
    """GET one rule; PATCH changes it (audited)."""

    staff_permissions = {"GET": ("alerts.view_alertrule",), "PATCH": ("alerts.change_alertrule",)}
    permission_classes = [IsStaff]
    serializer_class = AlertRuleSerializer

    def get_queryset(self):  # noqa: ANN201
        return alert_rules()

    def patch(self, request: Request, pk: int) -> Response:
        rule = get_object_or_404(AlertRule, pk=pk)
        serializer = AlertRuleSerializer(rule, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            rule = alert_rule_update(rule=rule, actor=_actor(request), **serializer.validated_data)
        except ValidationError as error:
            return Response(error.message_dict, status=400)
        return Response(AlertRuleSerializer(rule).data)


class AlertRuleUpliftView(APIView):
    """GET the uplift report of a rule (treated against control retention, 95% CI, cost, number needed to treat)."""

    staff_permissions = {"GET": ("alerts.view_alertrule",)}
    permission_classes = [IsStaff]

    @extend_schema(responses=UpliftReportSerializer)
    def get(self, request: Request, pk: int) -> Response:
        rule = get_object_or_404(AlertRule, pk=pk)
        return Response(UpliftReportSerializer(alert_rule_uplift(rule=rule)).data)


@extend_schema(
    parameters=[
        OpenApiParameter("status", str, enum=AlertStatus.values),
        OpenApiParameter("risk_tier", str, enum=RiskTier.values),
        OpenApiParameter("segment", str),
        OpenApiParameter("rule", int, description="Alert rule id."),
        OpenApiParameter("customer", int, description="Customer id."),
        OpenApiParameter("customer_external_id", str, description="The customer's id in your systems."),
    ]
)
class AlertListView(generics.ListAPIView):
    """The alert queue; filters: status, risk_tier, segment, rule, customer, customer_external_id."""

    staff_permissions = {"GET": ("alerts.view_alert",)}
    permission_classes = [IsStaffOrServiceClient]
    serializer_class = AlertSerializer
    ordering_fields = ["created_at", "probability", "expected_loss", "customer_value", "as_of"]

    def get_queryset(self):  # noqa: ANN201
        params = self.request.query_params
        return alerts_queue(
            status=query_choice(params, "status", AlertStatus.values),
            risk_tier=query_choice(params, "risk_tier", RiskTier.values),
            segment=params.get("segment") or None,
            rule_id=query_int(params, "rule"),
            customer_id=query_int(params, "customer"),
            customer_external_id=params.get("customer_external_id") or None,
        )


class AlertDetailView(generics.RetrieveAPIView):
    """GET one alert; PATCH {assignee (a staff username or null), notes} (audited)."""

    staff_permissions = {"GET": ("alerts.view_alert",), "PATCH": ("alerts.change_alert",)}
    permission_classes = [IsStaffOrServiceClientReadOnly]
    serializer_class = AlertSerializer

    def get_queryset(self):  # noqa: ANN201
        return alerts_queue()

    @extend_schema(request=AlertUpdateSerializer, responses=AlertSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(alerts_queue(), pk=pk)
        serializer = AlertUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changed = alert_update(
            alert=alert, actor=_actor(request), assignee=data.get("assignee", ...), notes=data.get("notes")
        )
        return Response(AlertSerializer(alerts_queue().get(pk=changed.pk)).data)


class AlertTransitionView(APIView):
    """POST {status, note}: acknowledge, dismiss, resolve, ... an alert (Idempotency-Key honoured)."""

    staff_permissions = {"POST": ("alerts.change_alert",)}
    permission_classes = [IsStaff]

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER],
        request=AlertTransitionSerializer,
        responses={
            200: AlertSerializer,
            400: OpenApiResponse(description="Invalid input, or the note would take the notes past their limit."),
            409: OpenApiResponse(description="Not allowed from the alert's status."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(alerts_queue(), pk=pk)

        def handler() -> tuple[int, object]:
            serializer = AlertTransitionSerializer(data=request.data)
            if not serializer.is_valid():
                return 400, serializer.errors
            try:
                changed = alert_transition(alert=alert, actor=_actor(request), **serializer.validated_data)
            except AlertTransitionError as error:
                return 409, {"detail": str(error)}
            except ValidationError as error:  # the note would take the notes past their limit
                return 400, error.message_dict
            return 200, AlertSerializer(changed).data

        return idempotent_response(request, handler)


class AlertSendCouponView(APIView):
    """POST: send the alert's customer a coupon email (one per alert, whatever the number of requests)."""

    staff_permissions = {"POST": ("alerts.change_alert",)}
    permission_classes = [IsStaff]

    @extend_schema(
        parameters=[IDEMPOTENCY_PARAMETER],
        request=None,
        responses={
            201: InterventionSerializer,
            409: OpenApiResponse(description="The alert is dismissed, resolved or actioned and has no coupon."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(alerts_queue(), pk=pk)

        def handler() -> tuple[int, object]:
            try:
                intervention = alert_send_coupon(alert=alert, actor=_actor(request))
            except CouponNotAllowed as error:
                return 409, {"detail": str(error)}
            return 201, InterventionSerializer(intervention).data

        return idempotent_response(request, handler, created_view="intervention-detail")


@extend_schema(
    parameters=[
        OpenApiParameter("status", str, enum=InterventionStatus.values),
        OpenApiParameter("kind", str, enum=ActionKind.values),
        OpenApiParameter("alert", int, description="Alert id."),
        OpenApiParameter("customer", int, description="Customer id."),
        OpenApiParameter("customer_external_id", str, description="The customer's id in your systems."),
    ]
)
class InterventionListView(generics.ListAPIView):
    """Retention actions; filters: status, kind, alert, customer, customer_external_id."""

    staff_permissions = {"GET": ("alerts.view_intervention",)}
    permission_classes = [IsStaff]
    serializer_class = InterventionSerializer
    ordering_fields = ["created_at", "sent_at", "status", "outcome_at"]

    def get_queryset(self):  # noqa: ANN201
        params = self.request.query_params
        return interventions_list(
            status=query_choice(params, "status", InterventionStatus.values),
            kind=query_choice(params, "kind", ActionKind.values),
            alert_id=query_int(params, "alert"),
            customer_id=query_int(params, "customer"),
            customer_external_id=params.get("customer_external_id") or None,
        )


class InterventionDetailView(generics.RetrieveAPIView):
    staff_permissions = {"GET": ("alerts.view_intervention",)}
    permission_classes = [IsStaff]
    serializer_class = InterventionSerializer

    def get_queryset(self):  # noqa: ANN201
        return interventions_list()


# --- The customer's unsubscribe page ---------------------------------------------------------------


def _token_customer(token: str) -> tuple[int | None, str | None]:
    """The customer id a token names (None: not a token of ours) and their language (None: the customer is gone)."""
    try:
        customer_id = int(signing.loads(token, salt="alerts.unsubscribe")["customer"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None, None
    language = Customer.objects.filter(pk=customer_id).values_list("language", flat=True).first()
    return customer_id, language


# The signed token is the credential (mail clients POST one-click unsubscribes without a CSRF cookie, RFC 8058).
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a confirmation page and changes nothing; POST opts the customer out. A link of a customer who is
    gone is not valid (404), on GET as on POST."""
    customer_id, customer_language = _token_customer(token)
    language = "zh" if (customer_language or "").lower().startswith("zh") else "en"
    if customer_id is None:
        return render(request, "alerts/unsubscribe.html", {"invalid": True, "language": language}, status=400)
    if customer_language is None:
        return render(request, "alerts/unsubscribe.html", {"invalid": True, "language": language}, status=404)
    if request.method == "POST":
        try:
            unsubscribe_customer(token=token)
        except Customer.DoesNotExist:
            return render(request, "alerts/unsubscribe.html", {"invalid": True, "language": language}, status=404)
        return render(request, "alerts/unsubscribe.html", {"done": True, "language": language})
    return render(request, "alerts/unsubscribe.html", {"language": language})
