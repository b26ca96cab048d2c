"""The OpenAPI 3.1 document of the service's own routes, served at `/openapi.json`.

BentoML's `/docs.json` lists only its infrastructure routes (health, metrics): the routes here are a
mounted Starlette app. This spec is what clients and the schemathesis fuzz test (tests/test_serve_fuzz.py)
read: every answer, refusals included, must match it.
"""

from __future__ import annotations

from functools import lru_cache

from safetyvlm.schema import SafetyReport

ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "string"}, "reason": {"type": "string"},
                        "error_id": {"type": "string"}}}


def _errors(*codes: int) -> dict:
    text = {400: "bad input", 401: "missing or wrong bearer token",
            408: "the body did not arrive in full within body_timeout_s", 413: "too large", 415: "unsupported type",
            422: "the model's processor rejected this image", 429: "over the concurrency cap",
            500: "a server fault, not the input's: `error_id` names the log line",
            503: "the model is restarting or the server is draining: retry after Retry-After",
            504: "not answered within the timeout"}
    return {str(c): {"description": text[c], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}} for c in codes}


OPTIONS = [
    {"name": "retrieval", "in": "query", "schema": {"type": "boolean"}},
    {"name": "max_tools", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
]
COMMON = (401, 429, 503, 504)


@lru_cache(maxsize=1)
def spec() -> dict:
    report = SafetyReport.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = report.pop("$defs", {})
    binary = {"type": "string", "format": "binary"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "SafetyVLM", "version": "1",
                 "description": "Tools in a photo and how to use them safely."},
        "components": {
            "schemas": {"SafetyReport": report, **defs, "Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/analyze": {"post": {
                "operationId": "analyze", "parameters": OPTIONS,
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                        "image": binary, "retrieval": {"type": "string"}, "max_tools": {"type": "string"}}}},
                    "image/png": {"schema": binary},
                    "image/jpeg": {"schema": binary},
                    "application/octet-stream": {"schema": binary}}},
                "responses": {
                    "200": {"description": "the report (with detail=true: the report and how it was made)",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"$ref": "#/components/schemas/SafetyReport"},
                                {"type": "object", "required": ["report", "valid"]}]}}}},
                    **_errors(400, 408, 413, 415, 422, 500, *COMMON)}}},
            "/v1/chat/completions": {"post": {
                "operationId": "chat_completions",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["messages"], "properties": {
                        "model": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "retrieval": {"type": "boolean"},
                        "max_tools": {"type": "integer"}}}}}},
                "responses": {"200": {"description": "an OpenAI chat completion; content is the report's JSON",
                                      "content": {"application/json": {"schema": {
                                          "type": "object", "required": ["choices"]}}}},
                              **_errors(400, 408, 413, 415, 422, 500, *COMMON)}}},
            "/v1/models": {"get": {"operationId": "models", "responses": {
                "200": {"description": "the one model", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["data"]}}}}, **_errors(*COMMON)}}},
            "/info": {"get": {"operationId": "info", "responses": {
                "200": {"description": "model and effective config", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["model", "config"]}}}}, **_errors(*COMMON)}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {
                "200": {"description": "this document", "content": {"application/json": {
                    "schema": {"type": "object"}}}}, **_errors(*COMMON)}}},
        },
    }
