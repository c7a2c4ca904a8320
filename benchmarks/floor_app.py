"""The floor of a scoring server on this machine: look up a precomputed row, LightGBM predict.

A bare Starlette app (one uvicorn process) with nothing else: no validation, no features, no
framework. ``benchmarks/serving.py`` starts it beside the service on the same model and load:

    CTO_FLOOR_MODEL=model.txt CTO_FLOOR_ROWS=rows.npz uvicorn benchmarks.floor_app:app

``POST /score {"customer_id": ...}`` answers the raw score; ``POST /score_contrib`` also the
per-feature contributions (TreeSHAP, ``pred_contrib``); ``GET /livez`` does nothing (the
server's own cost).
"""

from __future__ import annotations

import json
import os

import lightgbm as lgb
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_booster = lgb.Booster(model_file=os.environ["CTO_FLOOR_MODEL"])
_data = np.load(os.environ["CTO_FLOOR_ROWS"])
_rows = {str(key): row for key, row in zip(_data["ids"], _data["rows"], strict=True)}


async def score(request: Request) -> Response:
    row = _rows[json.loads(await request.body())["customer_id"]].reshape(1, -1)
    raw = float(_booster.predict(row, raw_score=True, num_threads=1)[0])
    return Response(json.dumps({"raw_score": raw}), media_type="application/json")


async def score_contrib(request: Request) -> Response:
    row = _rows[json.loads(await request.body())["customer_id"]].reshape(1, -1)
    raw = float(_booster.predict(row, raw_score=True, num_threads=1)[0])
    contributions = _booster.predict(row, pred_contrib=True, num_threads=1)[0]
    top = np.argsort(-np.abs(contributions[:-1]))[:5]
    body = {"raw_score": raw, "top": [[int(i), float(contributions[i])] for i in top]}
    return Response(json.dumps(body), media_type="application/json")


async def livez(_request: Request) -> Response:
    return Response("ok")


app = Starlette(
    routes=[
        Route("/livez", livez, methods=["GET"]),
        Route("/score", score, methods=["POST"]),
        Route("/score_contrib", score_contrib, methods=["POST"]),
    ]
)
