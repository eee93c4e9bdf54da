"""Spans from any application, sent over OTLP, read as the inference requests they describe.

``decode`` turns an OTLP/HTTP body (protobuf, or JSON with hex ids) into plain spans or a
clear error; ``genai`` reads the GenAI semantic conventions (current and older names) and
decides which spans are requests; ``ids`` derives request and event ids deterministically, so
an export sent twice describes the same requests. The gateway decodes; whoever assembles a
trace's spans into requests uses ``genai``: neither needs the other's process.
"""
