from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from shop_messages import GetPrice, OrderPlaced

import pycomms
from shop.apps import bus


@csrf_exempt
@require_POST
def place_order(request: HttpRequest, order_id: int) -> JsonResponse:
    bus().publish(OrderPlaced(order_id=order_id, sku=request.GET["sku"]))
    return JsonResponse({"order_id": order_id}, status=202)


@require_GET
def get_price(request: HttpRequest, sku: str) -> JsonResponse:
    try:
        price = bus().request(GetPrice(sku=sku), timeout=5.0)
    except pycomms.RequestTimeout:
        return JsonResponse({"error": "pricing did not answer"}, status=504)
    return JsonResponse({"sku": price.sku, "cents": price.cents})


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid(), "node_pid": bus().node.pid})
