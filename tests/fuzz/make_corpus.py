#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/.

The inputs are small and realistic: answers as each provider streams
them, Bedrock's event-stream frames with their CRCs, error bodies, token
endpoint answers and prompts. Run it again after changing it; the files
it writes are kept in the repository."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

OPENAI = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":'
          b'[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n'
          b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"lo"},'
          b'"finish_reason":"stop"}]}\n\n'
          b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,'
          b'"completion_tokens":2}}\n\n'
          b'data: [DONE]\n\n')
OPENAI_JSON = (b'{"id":"chatcmpl-2","object":"chat.completion","choices":[{"index":0,'
               b'"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],'
               b'"usage":{"prompt_tokens":3,"completion_tokens":1}}')
OPENAI_INBAND = (b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
                 b'data: {"error":{"message":"overloaded, retry after 2s",'
                 b'"type":"server_error","code":"503"}}\r\n\r\n')
AZURE = (b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
         b'"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}\n\n'
         b'data: {"choices":[{"content_filter_results":{},"delta":{"content":"Hi"},'
         b'"finish_reason":null,"index":0}],"id":"x"}\n\n'
         b'data: {"choices":[{"delta":{},"finish_reason":"content_filter","index":0}]}\n\n'
         b'data: [DONE]\n\n')
ANTHROPIC = (b'event: message_start\n'
             b'data: {"type":"message_start","message":{"id":"msg_1","type":"message",'
             b'"role":"assistant","content":[],"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
             b'event: content_block_start\n'
             b'data: {"type":"content_block_start","index":0,"content_block":'
             b'{"type":"text","text":""}}\n\n'
             b'event: ping\ndata: {"type":"ping"}\n\n'
             b'event: content_block_delta\n'
             b'data: {"type":"content_block_delta","index":0,"delta":'
             b'{"type":"text_delta","text":"Hel\\u00e9"}}\n\n'
             b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
             b'event: message_delta\n'
             b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
             b'"usage":{"output_tokens":3}}\n\n'
             b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
ANTHROPIC_ERROR = (b'event: error\n'
                   b'data: {"type":"error","error":{"type":"overloaded_error",'
                   b'"message":"Overloaded"}}\n\n')
VERTEX = (b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],'
          b'"usageMetadata":{"promptTokenCount":5},"responseId":"r1"}\r\n\r\n'
          b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},'
          b'"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,'
          b'"candidatesTokenCount":2,"totalTokenCount":7}}\r\n\r\n')
VERTEX_ERROR = (b'[{"error":{"code":429,"message":"Resource exhausted","status":'
                b'"RESOURCE_EXHAUSTED"}}]')


def header(name, value, kind=7):
    n = name.encode()
    if kind == 7:
        v = value.encode()
        return bytes([len(n)]) + n + bytes([7]) + struct.pack('>H', len(v)) + v
    if kind == 4:
        return bytes([len(n)]) + n + bytes([4]) + struct.pack('>i', value)
    if kind == 0:
        return bytes([len(n)]) + n + bytes([0])
    raise ValueError(kind)


def frame(headers, payload):
    total = 16 + len(headers) + len(payload)
    prelude = struct.pack('>II', total, len(headers))
    prelude += struct.pack('>I', zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack('>I', zlib.crc32(body))


def event(kind, payload):
    return frame(header(':message-type', 'event') + header(':event-type', kind) +
                 header(':content-type', 'application/json'), payload)


BEDROCK = (event('messageStart', b'{"role":"assistant","p":"abc"}') +
           event('contentBlockDelta',
                 b'{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"ab"}') +
           event('contentBlockDelta', b'{"contentBlockIndex":0,"delta":{"text":"lo\\n"}}') +
           event('contentBlockStop', b'{"contentBlockIndex":0}') +
           event('messageStop', b'{"stopReason":"end_turn"}') +
           event('metadata', b'{"usage":{"inputTokens":12,"outputTokens":4},'
                 b'"metrics":{"latencyMs":412}}'))
BEDROCK_EXCEPTION = (event('messageStart', b'{"role":"assistant"}') +
                     frame(header(':message-type', 'exception') +
                           header(':exception-type', 'throttlingException') +
                           header(':content-type', 'application/json'),
                           b'{"message":"Too many requests"}'))
BEDROCK_ERROR = frame(header(':message-type', 'error') + header(':error-code', 'InternalFailure') +
                      header(':error-message', 'oops'), b'')
TYPED = frame(header(':message-type', 'event') + header('x', 7, kind=4) +
              header('flag', None, kind=0), b'payload')

# Backend indexes of fuzz_stream_parsers.c and fuzz_classify_error.c.
OPENAI_I, AZURE_I, ANTHROPIC_I, VERTEX_I, BEDROCK_I = range(5)


def stream_input(backend, body, splits=b''):
    return bytes([backend, len(splits)]) + splits + body


def error_input(backend, status, body, content_type=b'application/json', request_id=b'req-1',
                retry_after=b'', retry_after_ms=b'', amzn=b'', should_retry=b''):
    return (bytes([backend]) + struct.pack('>H', status) + content_type + b'\0' + request_id +
            b'\0' + retry_after + b'\0' + retry_after_ms + b'\0' + amzn + b'\0' + should_retry +
            b'\0' + body)


CORPORA = {
    'sse': {
        'openai': b'\xff\x05' + OPENAI,
        'anthropic': b'\xff\x03' + ANTHROPIC,
        'crlf_bom': b'\x40\x01' + b'\xef\xbb\xbfdata: a\r\ndata: b\r\r: keep\ndata\nevent: x\n\n',
        'cap': b'\x08\x02' + b'data: 0123456789\n\n',
    },
    'eventstream': {
        'bedrock': b'\x05' + BEDROCK,
        'exception': b'\x0f' + BEDROCK_EXCEPTION,
        'error': b'\x00' + BEDROCK_ERROR,
        'typed': b'\x03' + TYPED,
        'small_cap': b'\x90' + BEDROCK,
    },
    'stream_parsers': {
        'openai': stream_input(OPENAI_I, OPENAI, b'\x07\x01\x20'),
        'openai_json': stream_input(OPENAI_I, OPENAI_JSON, b'\x05'),
        'openai_inband': stream_input(OPENAI_I, OPENAI_INBAND),
        'azure': stream_input(AZURE_I, AZURE, b'\x03\x00\x40'),
        'anthropic': stream_input(ANTHROPIC_I, ANTHROPIC, b'\x0b\x02'),
        'anthropic_error': stream_input(ANTHROPIC_I, ANTHROPIC_ERROR),
        'vertex': stream_input(VERTEX_I, VERTEX, b'\x09'),
        'vertex_error': stream_input(VERTEX_I, VERTEX_ERROR),
        'bedrock': stream_input(BEDROCK_I, BEDROCK, b'\x0d\x01\x30'),
        'bedrock_exception': stream_input(BEDROCK_I, BEDROCK_EXCEPTION),
        'bedrock_refused': stream_input(0xc0 | BEDROCK_I, BEDROCK, b'\x11'),
    },
    'classify_error': {
        'openai_429': error_input(OPENAI_I, 429, b'{"error":{"message":"Rate limit reached. '
                                  b'Please try again in 1.5s.","type":"requests",'
                                  b'"code":"rate_limit_exceeded"}}', retry_after=b'2'),
        'azure_filter': error_input(AZURE_I, 400, b'{"error":{"code":"content_filter",'
                                    b'"message":"filtered","innererror":{"code":'
                                    b'"ResponsibleAIPolicyViolation"}}}',
                                    retry_after_ms=b'1500'),
        'anthropic_529': error_input(ANTHROPIC_I, 529, b'{"type":"error","error":{"type":'
                                     b'"overloaded_error","message":"Overloaded"}}',
                                     should_retry=b'true'),
        'vertex_429': error_input(VERTEX_I, 429, b'[{"error":{"code":429,"message":'
                                  b'"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]'),
        'bedrock_throttle': error_input(BEDROCK_I, 429, b'{"message":"Too many requests"}',
                                        amzn=b'ThrottlingException:http://internal.amazon.com/'),
        'html_502': error_input(OPENAI_I, 502, b'<html><body>Bad gateway</body></html>',
                                content_type=b'text/html', retry_after=b'Wed, 21 Oct 2015 '
                                b'07:28:00 GMT'),
    },
    'token_response': {
        'ok': b'\x00\xc8{"access_token":"ya29.c.b0Aaek","expires_in":3599,"token_type":"Bearer"}',
        'ok_string_expiry': b'\x00\xc8{"access_token":"t2","expires_in":"120"}',
        'invalid_grant': b'\x01\x90{"error":"invalid_grant","error_description":"Invalid JWT"}',
        'unavailable': b'\x01\xf7<html>Service Unavailable</html>',
        'bad_token': b'\x00\xc8{"access_token":"a\\r\\nX-Evil: 1","expires_in":3599}',
    },
    'prompt': {
        'text': 'Summarise the attached notes in three bullet points.\n'.encode(),
        'utf8': 'Caf\u00e9 \u2014 \U0001f600\n'.encode(),
        'json': (b'{"messages":[{"role":"system","content":"Be brief."},'
                 b'{"role":"user","content":"Hi\\n"},{"role":"assistant","content":"Hello!"},'
                 b'{"role":"user","content":"\\u00e9"}],"temperature":0.2,"max_tokens":50,'
                 b'"stop":["END","\\n\\n"]}'),
        'json_bad_key': b'  {"model":"gpt-4o","messages":[]}',
        'blank': b' \t\r\n',
        'bad_utf8': b'hello \xc0\xaf world',
        'truncated_json': b'{"messages":[{"role":"user","content":"x"',
    },
}


def main():
    for target, files in CORPORA.items():
        folder = os.path.join(HERE, 'corpus', target)
        os.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(folder, name), 'wb') as f:
                f.write(data)


if __name__ == '__main__':
    main()
