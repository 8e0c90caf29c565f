"""Response models: what each route sends, one module per resource, so the OpenAPI schema
documents every answer. Routes still build plain dicts (api/serializers.py); FastAPI checks
them against these models and writes them out, so a field missing here would be dropped:
each model lists every key its serializer writes."""
