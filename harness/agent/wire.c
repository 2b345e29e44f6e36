/*
 * Wire format of the agent protocol: little-endian buffers, CRC32 and
 * frames.  See harness/agent/protocol.py for the layout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

void buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->failed = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

/* Room for n more bytes at the end; NULL (and b->failed) when out of memory. */
uint8_t *buf_grow(struct buf *b, size_t n)
{
	if (b->failed)
		return NULL;
	if (n == 0)
		return b->data ? b->data + b->len : NULL;
	if (n > FRAME_MAX_PAYLOAD || b->len + n > FRAME_MAX_PAYLOAD) {
		b->failed = 1;
		return NULL;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *data;

		while (cap < b->len + n)
			cap *= 2;
		data = realloc(b->data, cap);
		if (!data) {
			b->failed = 1;
			return NULL;
		}
		b->data = data;
		b->cap = cap;
	}
	b->len += n;
	return b->data + b->len - n;
}

void put_raw(struct buf *b, const void *p, size_t n)
{
	uint8_t *dst = buf_grow(b, n);

	if (dst && n)
		memcpy(dst, p, n);
}

static void put_le(struct buf *b, uint64_t v, unsigned int nbytes)
{
	uint8_t *dst = buf_grow(b, nbytes);
	unsigned int i;

	if (!dst)
		return;
	for (i = 0; i < nbytes; i++)
		dst[i] = (uint8_t)(v >> (8 * i));
}

void put_u8(struct buf *b, uint8_t v) { put_le(b, v, 1); }
void put_u16(struct buf *b, uint16_t v) { put_le(b, v, 2); }
void put_u32(struct buf *b, uint32_t v) { put_le(b, v, 4); }
void put_u64(struct buf *b, uint64_t v) { put_le(b, v, 8); }

/* Byte string: u32 length, then the bytes. */
void put_blob(struct buf *b, const void *p, size_t n)
{
	put_u32(b, (uint32_t)n);
	put_raw(b, p, n);
}

/* Short text: u16 length, then the bytes (no terminator). */
void put_str(struct buf *b, const char *s)
{
	size_t n = strlen(s);

	if (n > 0xffff)
		n = 0xffff;
	put_u16(b, (uint16_t)n);
	put_raw(b, s, n);
}

static uint64_t get_le(struct reader *r, unsigned int nbytes)
{
	uint64_t v = 0;
	unsigned int i;

	if (r->bad || r->left < nbytes) {
		r->bad = 1;
		return 0;
	}
	for (i = 0; i < nbytes; i++)
		v |= (uint64_t)r->p[i] << (8 * i);
	r->p += nbytes;
	r->left -= nbytes;
	return v;
}

uint8_t get_u8(struct reader *r) { return (uint8_t)get_le(r, 1); }
uint16_t get_u16(struct reader *r) { return (uint16_t)get_le(r, 2); }
uint32_t get_u32(struct reader *r) { return (uint32_t)get_le(r, 4); }
uint64_t get_u64(struct reader *r) { return get_le(r, 8); }

const uint8_t *get_blob(struct reader *r, size_t *len)
{
	const uint8_t *p;
	uint32_t n = get_u32(r);

	if (r->bad || r->left < n) {
		r->bad = 1;
		*len = 0;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= n;
	*len = n;
	return p;
}

/* A text field as a C string; fails on overflow or an embedded NUL. */
int get_cstr(struct reader *r, char *out, size_t outsz, int u16_len)
{
	size_t n = u16_len ? get_u16(r) : get_u32(r);

	if (r->bad || r->left < n || n + 1 > outsz || memchr(r->p, 0, n)) {
		r->bad = 1;
		out[0] = 0;
		return -1;
	}
	memcpy(out, r->p, n);
	out[n] = 0;
	r->p += n;
	r->left -= n;
	return 0;
}

int reader_finished(const struct reader *r)
{
	return !r->bad && r->left == 0;
}

/* CRC-32 (IEEE 802.3, reflected, as zlib.crc32 computes it). */
uint32_t crc32_ieee(const void *data, size_t len)
{
	static uint32_t table[256];
	static int ready;
	const uint8_t *p = data;
	uint32_t crc = 0xffffffffu;
	size_t i;

	if (!ready) {
		uint32_t n, c;
		int k;

		for (n = 0; n < 256; n++) {
			c = n;
			for (k = 0; k < 8; k++)
				c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[n] = c;
		}
		ready = 1;
	}
	for (i = 0; i < len; i++)
		crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return crc ^ 0xffffffffu;
}

/* Wait until fd is readable: 1 ready, 0 timed out (timeout_ms < 0: forever). */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int n;

	do
		n = poll(&pfd, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	return n > 0;
}

/*
 * Read exactly len bytes.  The first byte may be waited for forever when
 * idle_ok; everything after it must arrive within FRAME_BODY_TIMEOUT_MS.
 * Returns the number of bytes read (short on EOF or timeout).
 */
static size_t read_exact(int fd, uint8_t *p, size_t len, int idle_ok)
{
	size_t got = 0;

	while (got < len) {
		int timeout = (got == 0 && idle_ok) ? -1 : FRAME_BODY_TIMEOUT_MS;
		ssize_t n;

		if (!wait_readable(fd, timeout))
			break;
		n = read(fd, p + got, len - got);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static uint32_t le32_at(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint16_t le16_at(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Check a received header; fills f and returns the payload length. */
static int parse_header(const uint8_t *h, const char *magic, struct frame *f,
			uint32_t *len, uint32_t *crc, char *why, size_t whylen)
{
	if (memcmp(h, magic, 4) != 0) {
		snprintf(why, whylen, "bad magic %02x%02x%02x%02x (expected %.4s)",
			 h[0], h[1], h[2], h[3], magic);
		return -1;
	}
	if (le32_at(h + 24) != crc32_ieee(h, 24)) {
		snprintf(why, whylen, "header CRC mismatch: frame says %08x, computed %08x",
			 le32_at(h + 24), crc32_ieee(h, 24));
		return -1;
	}
	f->seq = le32_at(h + 4);
	f->op = le16_at(h + 8);
	f->status = le16_at(h + 10);
	f->error = le32_at(h + 12);
	*len = le32_at(h + 16);
	*crc = le32_at(h + 20);
	if (*len > FRAME_MAX_PAYLOAD) {
		snprintf(why, whylen, "payload length %u exceeds the limit %u",
			 *len, FRAME_MAX_PAYLOAD);
		return -1;
	}
	return 0;
}

/*
 * Read one frame.  FRAME_OK: f is filled (its payload owned by the caller);
 * FRAME_EOF: the peer closed before a frame began; FRAME_BAD: why says what
 * was wrong (f->seq is set when the header itself was sound, else 0).
 */
int frame_read(int fd, const char *magic, struct frame *f, char *why, size_t whylen)
{
	uint8_t header[FRAME_HEADER_SIZE];
	uint32_t len, crc;
	size_t got;
	uint8_t *payload;

	buf_init(&f->payload);
	f->seq = 0;
	got = read_exact(fd, header, sizeof(header), 1);
	if (got == 0)
		return FRAME_EOF;
	if (got < sizeof(header)) {
		snprintf(why, whylen, "truncated frame: header has %zu of %u bytes",
			 got, FRAME_HEADER_SIZE);
		return FRAME_BAD;
	}
	if (parse_header(header, magic, f, &len, &crc, why, whylen) != 0) {
		f->seq = 0;
		return FRAME_BAD;
	}
	payload = buf_grow(&f->payload, len);
	if (len && !payload) {
		snprintf(why, whylen, "no memory for a payload of %u bytes", len);
		return FRAME_BAD;
	}
	got = read_exact(fd, payload, len, 0);
	if (got < len) {
		snprintf(why, whylen, "truncated frame: payload has %zu of %u bytes", got, len);
		buf_free(&f->payload);
		return FRAME_BAD;
	}
	if (crc32_ieee(payload, len) != crc) {
		snprintf(why, whylen, "payload CRC mismatch: frame says %08x, computed %08x",
			 crc, crc32_ieee(payload, len));
		buf_free(&f->payload);
		return FRAME_BAD;
	}
	return FRAME_OK;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Send one frame (header and payload in one write). */
int frame_write(int fd, const char *magic, const struct frame *f)
{
	struct buf out;
	uint8_t *h;
	int ret;

	buf_init(&out);
	put_raw(&out, magic, 4);
	put_u32(&out, f->seq);
	put_u16(&out, f->op);
	put_u16(&out, f->status);
	put_u32(&out, f->error);
	put_u32(&out, (uint32_t)f->payload.len);
	put_u32(&out, crc32_ieee(f->payload.data, f->payload.len));
	if (out.failed)
		return -1;
	put_u32(&out, crc32_ieee(out.data, 24));
	put_raw(&out, f->payload.data, f->payload.len);
	if (out.failed) {
		buf_free(&out);
		return -1;
	}
	h = out.data;
	ret = write_all(fd, h, out.len);
	buf_free(&out);
	return ret;
}

/* After a bad frame: drop what is in flight until the line is quiet (200 ms). */
void frame_discard_input(int fd)
{
	uint8_t scratch[4096];

	while (wait_readable(fd, 200)) {
		if (read(fd, scratch, sizeof(scratch)) <= 0)
			break;
	}
}
