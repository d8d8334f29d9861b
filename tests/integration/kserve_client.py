#!/usr/bin/python3
"""An independent KServe v2 (Open Inference Protocol) gRPC client for kvserve's tests.

It speaks only what proto/inference/grpc_service.proto defines, through Python stubs that the
caller generated from that file with Debian's grpcio-tools (no kvserve code is involved):

    /usr/bin/python3 -m grpc_tools.protoc -I proto --python_out=STUBS \
        --grpc_python_out=STUBS proto/inference/grpc_service.proto
    /usr/bin/python3 tests/integration/kserve_client.py --address 127.0.0.1:PORT \
        --stubs STUBS --reference tests/testdata/stories260K_reference.json --case all

Each case prints "PASS <case>" or "FAIL <case>: <why>"; the exit code is 0 only when every
case passed (2 for bad arguments). Driven by tests/integration/kserve_python_client_test.cc.
"""

import argparse
import json
import struct
import sys
import threading
import time
import traceback

GRPC = None
PB = None
PB_GRPC = None
TIMEOUT_S = 60


class CaseFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CaseFailure(message)


def check_eq(actual, expected, what):
    if actual != expected:
        raise CaseFailure(f"{what}: got {actual!r}, want {expected!r}")


# ------------------------------------------------------------------------------------------
# Request building and response decoding, straight from the specification.

def scalar_input(name, datatype, value, batch=False):
    tensor = PB.ModelInferRequest.InferInputTensor(name=name, datatype=datatype)
    tensor.shape.extend([1, 1] if batch else [1])
    contents = tensor.contents
    if datatype == "BYTES":
        contents.bytes_contents.append(value.encode() if isinstance(value, str) else value)
    elif datatype in ("INT8", "INT16", "INT32"):
        contents.int_contents.append(value)
    elif datatype == "INT64":
        contents.int64_contents.append(value)
    elif datatype in ("UINT8", "UINT16", "UINT32"):
        contents.uint_contents.append(value)
    elif datatype == "UINT64":
        contents.uint64_contents.append(value)
    elif datatype == "FP32":
        contents.fp32_contents.append(value)
    elif datatype == "FP64":
        contents.fp64_contents.append(value)
    elif datatype == "BOOL":
        contents.bool_contents.append(value)
    else:
        raise ValueError(datatype)
    return tensor


def infer_request(model, prompt, max_tokens=None, request_id="", extra_inputs=(), **params):
    request = PB.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.append(scalar_input("text_input", "BYTES", prompt))
    if max_tokens is not None:
        request.inputs.append(scalar_input("max_tokens", "INT32", max_tokens))
    for tensor in extra_inputs:
        request.inputs.append(tensor)
    for key, value in params.items():
        parameter = request.parameters[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = value
    return request


def raw_bytes_element(data):
    return struct.pack("<I", len(data)) + data


def decode_raw_bytes(raw):
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def outputs_of(response):
    """{name: (datatype, shape, values)} with raw contents decoded."""
    result = {}
    for index, output in enumerate(response.outputs):
        shape = list(output.shape)
        if len(response.raw_output_contents) > 0:
            check_eq(len(response.raw_output_contents), len(response.outputs),
                     "raw_output_contents entries")
            raw = response.raw_output_contents[index]
            if output.datatype == "BYTES":
                values = decode_raw_bytes(raw)
            elif output.datatype == "INT32":
                values = list(struct.unpack(f"<{len(raw) // 4}i", raw))
            else:
                raise CaseFailure(f"unexpected output datatype {output.datatype}")
        elif output.datatype == "BYTES":
            values = list(output.contents.bytes_contents)
        elif output.datatype == "INT32":
            values = list(output.contents.int_contents)
        else:
            raise CaseFailure(f"unexpected output datatype {output.datatype}")
        result[output.name] = (output.datatype, shape, values)
    return result


def text_and_ids(response):
    outputs = outputs_of(response)
    check("text_output" in outputs and "output_ids" in outputs,
          f"outputs are {sorted(outputs)}")
    text_type, text_shape, text_values = outputs["text_output"]
    ids_type, ids_shape, ids_values = outputs["output_ids"]
    check_eq(text_type, "BYTES", "text_output datatype")
    check_eq(ids_type, "INT32", "output_ids datatype")
    check_eq(text_shape[-1], 1, "text_output shape")
    check_eq(ids_shape[-1], len(ids_values), "output_ids shape")
    return text_values[0].decode(), ids_values


def parameter(response, name):
    """The value of a response parameter, whichever oneof choice it uses (None if absent)."""
    if name not in response.parameters:
        return None
    value = response.parameters[name]
    return getattr(value, value.WhichOneof("parameter_choice"))


def expect_rpc_error(call, code, substrings):
    try:
        call()
    except GRPC.RpcError as error:  # pylint: disable=catching-non-exception
        check_eq(error.code(), code, "status code")
        for substring in substrings:
            check(substring in error.details(),
                  f"message {error.details()!r} lacks {substring!r}")
        return error.details()
    raise CaseFailure(f"expected {code}, the call succeeded")


def stream_collect(stub, requests, metadata=None, timeout=TIMEOUT_S):
    """Sends `requests` on one ModelStreamInfer call, half-closes, returns every response."""
    return list(stub.ModelStreamInfer(iter(requests), timeout=timeout, metadata=metadata))


# ------------------------------------------------------------------------------------------
# Cases

class Context:
    def __init__(self, stub, reference):
        self.stub = stub
        self.reference = reference
        self.model = stub.ModelMetadata(PB.ModelMetadataRequest(name=""), timeout=TIMEOUT_S).name


def case_metadata(ctx):
    stub, model = ctx.stub, ctx.model
    check(stub.ServerLive(PB.ServerLiveRequest(), timeout=TIMEOUT_S).live, "ServerLive.live")
    check(stub.ServerReady(PB.ServerReadyRequest(), timeout=TIMEOUT_S).ready, "ServerReady.ready")
    for version in ("", "1"):
        ready = stub.ModelReady(PB.ModelReadyRequest(name=model, version=version),
                                timeout=TIMEOUT_S)
        check(ready.ready, f"ModelReady(version={version!r}).ready")
    expect_rpc_error(lambda: stub.ModelReady(PB.ModelReadyRequest(name="no-such-model"),
                                             timeout=TIMEOUT_S),
                     GRPC.StatusCode.NOT_FOUND, ["no-such-model", model])
    expect_rpc_error(lambda: stub.ModelReady(PB.ModelReadyRequest(name=model, version="2"),
                                             timeout=TIMEOUT_S),
                     GRPC.StatusCode.NOT_FOUND, ["version '2'"])

    server = stub.ServerMetadata(PB.ServerMetadataRequest(), timeout=TIMEOUT_S)
    check_eq(server.name, "kvserve", "ServerMetadata.name")
    check(server.version != "", "ServerMetadata.version is empty")
    check("model_stream_infer" in server.extensions, f"extensions {list(server.extensions)}")

    metadata = stub.ModelMetadata(PB.ModelMetadataRequest(name=model, version="1"),
                                  timeout=TIMEOUT_S)
    check_eq(metadata.name, model, "ModelMetadata.name")
    check_eq(list(metadata.versions), ["1"], "ModelMetadata.versions")
    inputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}
    outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
    check_eq(inputs.get("text_input"), ("BYTES", [1]), "text_input metadata")
    for name in ("max_tokens", "temperature", "top_k", "top_p", "seed", "stream", "stop_words"):
        check(name in inputs, f"input {name} missing from {sorted(inputs)}")
    check_eq(outputs, {"text_output": ("BYTES", [1]), "output_ids": ("INT32", [-1])},
             "outputs metadata")
    check(int(metadata.properties["context_length"]) > 0,
          f"properties {dict(metadata.properties)}")
    expect_rpc_error(lambda: stub.ModelMetadata(PB.ModelMetadataRequest(name="other"),
                                                timeout=TIMEOUT_S),
                     GRPC.StatusCode.NOT_FOUND, ["'other'"])


def case_infer_greedy(ctx):
    ref = ctx.reference
    n = len(ref["generated_ids"])
    request = infer_request(ctx.model, ref["prompt"], n, request_id="greedy-1",
                            extra_inputs=[scalar_input("temperature", "FP32", 0.0)])
    response = ctx.stub.ModelInfer(request, timeout=TIMEOUT_S)
    check_eq(response.model_name, ctx.model, "model_name")
    check_eq(response.model_version, "1", "model_version")
    check_eq(response.id, "greedy-1", "id")
    check_eq(len(response.raw_output_contents), 0, "typed request got raw outputs")
    text, ids = text_and_ids(response)
    check_eq(ids, ref["generated_ids"], "output_ids")
    check_eq(text, ref["generated_text"], "text_output")
    check_eq(parameter(response, "finish_reason"), "length", "finish_reason")
    check_eq(parameter(response, "completion_tokens"), n, "completion_tokens")
    check_eq(parameter(response, "prompt_tokens"), len(ref["prompt_ids"]), "prompt_tokens")


def case_infer_raw(ctx):
    """raw_input_contents in, raw_output_contents out; [1, 1] shapes keep a batch dimension."""
    ref = ctx.reference
    n = len(ref["generated_ids"])
    request = PB.ModelInferRequest(model_name=ctx.model, model_version="1")
    for name, datatype, raw in (
            ("text_input", "BYTES", raw_bytes_element(ref["prompt"].encode())),
            ("max_tokens", "INT64", struct.pack("<q", n)),
            ("seed", "UINT64", struct.pack("<Q", 7)),
            ("stop_words", "BYTES", b"")):
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend([1, 0] if name == "stop_words" else [1, 1])
        request.raw_input_contents.append(raw)
    request.parameters["kv_policy"].string_param = "full"
    response = ctx.stub.ModelInfer(request, timeout=TIMEOUT_S)
    check_eq(len(response.raw_output_contents), 2, "raw_output_contents entries")
    outputs = outputs_of(response)
    check_eq(outputs["text_output"][1], [1, 1], "text_output shape")
    check_eq(outputs["output_ids"][1], [1, n], "output_ids shape")
    text, ids = text_and_ids(response)
    check_eq(ids, ref["generated_ids"], "output_ids")
    check_eq(text, ref["generated_text"], "text_output")

    # Only the requested output, in typed form.
    typed = infer_request(ctx.model, ref["prompt"], 8)
    typed.outputs.add(name="output_ids")
    response = ctx.stub.ModelInfer(typed, timeout=TIMEOUT_S)
    check_eq([o.name for o in response.outputs], ["output_ids"], "requested outputs")
    check_eq(list(response.outputs[0].contents.int_contents), ref["generated_ids"][:8],
             "output_ids")


def check_stream_responses(responses, request_id, ref, n, empty_final, min_responses=1):
    """One request's responses: flags false until the last, ids/text equal the reference.

    How many responses a generation takes depends on timing (output produced while a write is
    in flight is sent together), so only long generations are required to come in pieces.
    """
    check(len(responses) >= min_responses,
          f"{len(responses)} responses, fewer than {min_responses}: not streamed")
    text, ids = "", []
    for index, stream_response in enumerate(responses):
        check_eq(stream_response.error_message, "", "error_message")
        response = stream_response.infer_response
        check_eq(response.id, request_id, "id")
        last = index == len(responses) - 1
        check_eq(parameter(response, "triton_final_response"), last,
                 f"triton_final_response of response {index}/{len(responses)}")
        if last and empty_final:
            check_eq(len(response.outputs), 0, "outputs of the empty final response")
            check_eq(parameter(response, "finish_reason"), "length", "finish_reason")
            continue
        chunk_text, chunk_ids = text_and_ids(response)
        text += chunk_text
        ids += chunk_ids
    check_eq(ids, ref["generated_ids"][:n], "streamed output_ids")
    if n == len(ref["generated_ids"]):
        check_eq(text, ref["generated_text"], "streamed text_output")


def case_stream(ctx):
    ref = ctx.reference
    n = len(ref["generated_ids"])
    # Final flag on the last chunk.
    responses = stream_collect(ctx.stub, [infer_request(ctx.model, ref["prompt"], n,
                                                        request_id="s1")])
    check_stream_responses(responses, "s1", ref, n, empty_final=False, min_responses=2)
    check_eq(parameter(responses[-1].infer_response, "finish_reason"), "length",
             "finish_reason")
    # Opt-in empty final response.
    responses = stream_collect(ctx.stub, [infer_request(
        ctx.model, ref["prompt"], n, request_id="s2", triton_enable_empty_final_response=True)])
    check_stream_responses(responses, "s2", ref, n, empty_final=True, min_responses=2)
    # Two requests on one stream run together; each completes, told apart by id.
    responses = stream_collect(ctx.stub, [
        infer_request(ctx.model, ref["prompt"], n, request_id="a"),
        infer_request(ctx.model, ref["prompt"], 16, request_id="b", stream=True)])
    for request_id, count in (("a", n), ("b", 16)):
        mine = [r for r in responses if r.infer_response.id == request_id]
        check_stream_responses(mine, request_id, ref, count, empty_final=False)
    # stream=false on the streaming RPC: one whole response.
    responses = stream_collect(ctx.stub, [infer_request(
        ctx.model, ref["prompt"], n, request_id="whole",
        extra_inputs=[scalar_input("stream", "BOOL", False)])])
    check_eq(len(responses), 1, "responses for stream=false")
    check_eq(parameter(responses[0].infer_response, "triton_final_response"), True, "final")
    text, ids = text_and_ids(responses[0].infer_response)
    check_eq(ids, ref["generated_ids"], "output_ids")
    check_eq(text, ref["generated_text"], "text_output")


# (name, how to break a valid greedy request, substrings the message must contain)
def _wrong_type(request):
    request.inputs[0].datatype = "INT32"
    request.inputs[0].contents.Clear()
    request.inputs[0].contents.int_contents.append(5)


def _wrong_param_type(request):
    request.inputs.append(scalar_input("max_tokens", "FP32", 8.0))


def _wrong_shape(request):
    del request.inputs[0].shape[:]
    request.inputs[0].shape.append(2)
    request.inputs[0].contents.bytes_contents.append(b"second prompt")


def _missing_input(request):
    del request.inputs[0]
    request.inputs.append(scalar_input("max_tokens", "INT32", 8))


def _bad_datatype(request):
    request.inputs[0].datatype = "STRING"


def _count_mismatch(request):
    request.inputs[0].contents.bytes_contents.append(b"extra")


def _unknown_input(request):
    request.inputs.append(scalar_input("temprature", "FP32", 0.5))


def _bad_raw(request):
    request.raw_input_contents.append(struct.pack("<I", 100) + b"short")
    request.inputs[0].ClearField("contents")


def _stream_on_unary(request):
    request.parameters["stream"].bool_param = True


def _bad_kv_policy(request):
    request.parameters["kv_policy"].string_param = "h2o:keep=banana"


def _invalid_utf8(request):
    request.inputs[0].contents.bytes_contents[0] = b"Once \xff\xfe time"


def _max_tokens_too_large(request):
    request.inputs.append(scalar_input("max_tokens", "INT64", 1 << 40))


BAD_REQUESTS = [
    ("wrong_type", _wrong_type, ["text_input", "datatype INT32", "BYTES"]),
    ("wrong_param_type", _wrong_param_type, ["max_tokens", "FP32", "INT32"]),
    ("wrong_shape", _wrong_shape, ["text_input", "shape [2]", "[1] or [1, 1]"]),
    ("missing_input", _missing_input, ["missing input 'text_input'"]),
    ("bad_datatype", _bad_datatype, ["unknown datatype 'STRING'"]),
    ("count_mismatch", _count_mismatch, ["text_input", "2 elements", "needs 1"]),
    ("unknown_input", _unknown_input, ["unexpected input 'temprature'"]),
    ("bad_raw", _bad_raw, ["raw contents of input 'text_input'"]),
    ("stream_on_unary", _stream_on_unary, ["ModelStreamInfer"]),
    ("bad_kv_policy", _bad_kv_policy, ["banana"]),
    ("max_tokens_too_large", _max_tokens_too_large, ["max_tokens"]),
    ("invalid_utf8", _invalid_utf8, ["UTF-8"]),
]


def case_bad_tensors(ctx):
    for name, breaker, substrings in BAD_REQUESTS:
        request = infer_request(ctx.model, "Once upon a time")
        breaker(request)
        try:
            expect_rpc_error(lambda: ctx.stub.ModelInfer(request, timeout=TIMEOUT_S),
                             GRPC.StatusCode.INVALID_ARGUMENT, substrings)
        except CaseFailure as failure:
            raise CaseFailure(f"{name}: {failure}") from None
    expect_rpc_error(lambda: ctx.stub.ModelInfer(infer_request("no-such-model", "Hi", 4),
                                                 timeout=TIMEOUT_S),
                     GRPC.StatusCode.NOT_FOUND, ["no-such-model"])

    # In a stream, a bad request gets an in-stream error and the stream goes on.
    bad = infer_request(ctx.model, "Once upon a time", request_id="bad")
    _wrong_type(bad)
    good = infer_request(ctx.model, ctx.reference["prompt"], 8, request_id="good")
    responses = stream_collect(ctx.stub, [bad, good])
    errors = [r for r in responses if r.error_message]
    check_eq(len(errors), 1, "in-stream errors")
    check(errors[0].error_message.startswith("INVALID_ARGUMENT: "), errors[0].error_message)
    check("datatype INT32" in errors[0].error_message, errors[0].error_message)
    check_eq(errors[0].infer_response.id, "bad", "id of the failed request")
    good_responses = [r for r in responses if r.infer_response.id == "good"]
    check_stream_responses(good_responses, "good", ctx.reference, 8, empty_final=False)

    # With triton_grpc_error the stream ends with the real status code.
    expect_rpc_error(lambda: stream_collect(ctx.stub, [bad, good],
                                            metadata=(("triton_grpc_error", "true"),)),
                     GRPC.StatusCode.INVALID_ARGUMENT, ["datatype INT32"])


def case_cancel(ctx):
    """Cancelling a stream mid-generation leaves every other request unaffected."""
    ref = ctx.reference
    n = len(ref["generated_ids"])
    other = {}

    def run_other():
        try:
            other["responses"] = stream_collect(ctx.stub, [infer_request(
                ctx.model, ref["prompt"], n, request_id="other")])
        except Exception as error:  # pylint: disable=broad-except
            other["error"] = error

    # A long request (stop words that never match keep it going), cancelled after 2 chunks.
    long_request = infer_request(ctx.model, ref["prompt"], 400, request_id="long",
                                 extra_inputs=[scalar_input("temperature", "FP32", 0.9),
                                               scalar_input("seed", "UINT64", 3)])
    call = ctx.stub.ModelStreamInfer(iter([long_request]), timeout=TIMEOUT_S)
    thread = threading.Thread(target=run_other)
    thread.start()
    received = 0
    for response in call:
        check_eq(response.error_message, "", "error_message before the cancel")
        received += 1
        if received == 2:
            call.cancel()
            break
    check_eq(received, 2, "responses before the cancel")
    try:
        for _ in call:
            pass
        raise CaseFailure("the cancelled call kept delivering")
    except GRPC.RpcError as error:  # pylint: disable=catching-non-exception
        check_eq(error.code(), GRPC.StatusCode.CANCELLED, "status of the cancelled call")
    thread.join(TIMEOUT_S)
    check("error" not in other, f"the concurrent stream failed: {other.get('error')}")
    check_stream_responses(other["responses"], "other", ref, n, empty_final=False)
    # The server still serves, and is still ready.
    response = ctx.stub.ModelInfer(infer_request(ctx.model, ref["prompt"], n), timeout=TIMEOUT_S)
    check_eq(text_and_ids(response)[1], ref["generated_ids"], "output_ids after the cancel")
    check(ctx.stub.ServerReady(PB.ServerReadyRequest(), timeout=TIMEOUT_S).ready,
          "ready after the cancel")


CASES = {
    "metadata": case_metadata,
    "infer_greedy": case_infer_greedy,
    "infer_raw": case_infer_raw,
    "stream": case_stream,
    "bad_tensors": case_bad_tensors,
    "cancel": case_cancel,
}


def main():
    global GRPC, PB, PB_GRPC  # pylint: disable=global-statement
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT of the server")
    parser.add_argument("--stubs", required=True, help="directory of the generated stubs")
    parser.add_argument("--reference", required=True, help="stories260K_reference.json")
    parser.add_argument("--case", default="all", choices=["all"] + sorted(CASES))
    args = parser.parse_args()

    sys.path.insert(0, args.stubs)
    import grpc  # pylint: disable=import-outside-toplevel
    from inference import grpc_service_pb2  # pylint: disable=import-outside-toplevel
    from inference import grpc_service_pb2_grpc  # pylint: disable=import-outside-toplevel
    GRPC, PB, PB_GRPC = grpc, grpc_service_pb2, grpc_service_pb2_grpc

    with open(args.reference, encoding="utf-8") as f:
        reference = json.load(f)["results"][0]
    channel = grpc.insecure_channel(args.address)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
    ctx = Context(PB_GRPC.GRPCInferenceServiceStub(channel), reference)

    names = sorted(CASES) if args.case == "all" else [args.case]
    failed = 0
    for name in names:
        start = time.monotonic()
        try:
            CASES[name](ctx)
            print(f"PASS {name} ({time.monotonic() - start:.2f}s)", flush=True)
        except CaseFailure as failure:
            failed += 1
            print(f"FAIL {name}: {failure}", flush=True)
        except Exception:  # pylint: disable=broad-except
            failed += 1
            print(f"FAIL {name}: {traceback.format_exc()}", flush=True)
    channel.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
