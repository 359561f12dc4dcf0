"""application/vnd.amazon.eventstream framing (big-endian prelude, string
headers, two CRC-32 checksums), as used by Bedrock ConverseStream."""

import struct
import zlib

_STRING = 7


def encode_headers(headers):
    out = bytearray()
    for name, value in headers:
        name_b = name.encode("utf-8")
        value_b = value.encode("utf-8")
        out += struct.pack(">B", len(name_b)) + name_b
        out += struct.pack(">BH", _STRING, len(value_b)) + value_b
    return bytes(out)


def encode_message(headers, payload, corrupt=False):
    """One framed message. `corrupt` flips the message CRC (for fault tests)."""
    hdr = encode_headers(headers)
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    body = head + hdr + payload
    crc = zlib.crc32(body)
    if corrupt:
        crc ^= 0xFFFFFFFF
    return body + struct.pack(">I", crc)


def event(event_type, payload):
    return encode_message([(":event-type", event_type),
                           (":content-type", "application/json"),
                           (":message-type", "event")], payload)


def exception(exception_type, payload):
    return encode_message([(":exception-type", exception_type),
                           (":content-type", "application/json"),
                           (":message-type", "exception")], payload)


def corrupt(message):
    """The same message with its trailing CRC inverted."""
    crc = struct.unpack(">I", message[-4:])[0] ^ 0xFFFFFFFF
    return message[:-4] + struct.pack(">I", crc)


class DecodeError(Exception):
    pass


def decode_stream(data):
    """Decode concatenated messages into [(headers dict, payload bytes)];
    verifies both checksums. Raises DecodeError on damage or a partial tail."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 16:
            raise DecodeError("truncated prelude at offset %d" % pos)
        total, hlen, pcrc = struct.unpack(">III", data[pos:pos + 12])
        if zlib.crc32(data[pos:pos + 8]) != pcrc:
            raise DecodeError("prelude CRC mismatch at offset %d" % pos)
        if total < 16 or pos + total > len(data):
            raise DecodeError("truncated message at offset %d" % pos)
        msg = data[pos:pos + total]
        if zlib.crc32(msg[:-4]) != struct.unpack(">I", msg[-4:])[0]:
            raise DecodeError("message CRC mismatch at offset %d" % pos)
        headers = {}
        h = msg[12:12 + hlen]
        i = 0
        while i < len(h):
            nlen = h[i]
            name = h[i + 1:i + 1 + nlen].decode()
            i += 1 + nlen
            htype = h[i]
            i += 1
            if htype in (0, 1):
                value = htype == 0
            elif htype == 2:
                value = struct.unpack(">b", h[i:i + 1])[0]
                i += 1
            elif htype == 3:
                value = struct.unpack(">h", h[i:i + 2])[0]
                i += 2
            elif htype == 4:
                value = struct.unpack(">i", h[i:i + 4])[0]
                i += 4
            elif htype in (5, 8):
                value = struct.unpack(">q", h[i:i + 8])[0]
                i += 8
            elif htype in (6, 7):
                vlen = struct.unpack(">H", h[i:i + 2])[0]
                raw = h[i + 2:i + 2 + vlen]
                value = raw.decode() if htype == 7 else raw
                i += 2 + vlen
            elif htype == 9:
                value = h[i:i + 16]
                i += 16
            else:
                raise DecodeError("unknown header type %d" % htype)
            headers[name] = value
        out.append((headers, msg[12 + hlen:-4]))
        pos += total
    return out
