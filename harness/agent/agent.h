/*
 * Guest agent of the pagemap harness: shared declarations.
 *
 * The agent is /init of the test initramfs.  It serves requests from the
 * host over a virtio-serial port named "agent".  The wire format is defined
 * once, in harness/agent/protocol.py, which generates protocol.h.
 *
 * Everything on the wire is little-endian whatever the guest's byte order:
 * the put_* and get_* helpers convert explicitly, byte by byte.
 */
#ifndef PMH_AGENT_H
#define PMH_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Op numbers, statuses, argument codes, constants and every op's layout:
 * generated from harness/agent/protocol.py. */
#include "protocol.h"

/* The rest of a frame must follow its first byte within this many ms. */
#define FRAME_BODY_TIMEOUT_MS 3000

/* A growable output buffer; a failed allocation sticks in `failed`. */
struct buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	int failed;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
uint8_t *buf_grow(struct buf *b, size_t n);
void put_raw(struct buf *b, const void *p, size_t n);
void put_u8(struct buf *b, uint8_t v);
void put_u16(struct buf *b, uint16_t v);
void put_u32(struct buf *b, uint32_t v);
void put_u64(struct buf *b, uint64_t v);
void put_blob(struct buf *b, const void *p, size_t n);
void put_str(struct buf *b, const char *s);

/* A cursor over received bytes; reading past the end sets `bad`. */
struct reader {
	const uint8_t *p;
	size_t left;
	int bad;
};

uint8_t get_u8(struct reader *r);
uint16_t get_u16(struct reader *r);
uint32_t get_u32(struct reader *r);
uint64_t get_u64(struct reader *r);
const uint8_t *get_blob(struct reader *r, size_t *len);
int get_cstr(struct reader *r, char *out, size_t outsz, int u16_len);
int reader_finished(const struct reader *r);

uint32_t crc32_ieee(const void *data, size_t len);

struct frame {
	uint32_t seq;
	uint16_t op;
	uint16_t status;
	uint32_t error;
	struct buf payload;
};

enum frame_result { FRAME_OK, FRAME_EOF, FRAME_BAD };

int frame_read(int fd, const char *magic, struct frame *f, char *why, size_t whylen);
int frame_write(int fd, const char *magic, const struct frame *f);
void frame_discard_input(int fd);

/* One decoded request and the reply being built for it. */
struct request {
	uint32_t seq;
	uint16_t op;
	char target[PROC_NAME_MAX + 1];
	struct reader args;
};

struct reply {
	uint16_t status;
	uint32_t error;
	struct buf payload;
};

void reply_fail(struct reply *rep, uint16_t status, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int args_ok(struct request *req, struct reply *rep);

/* Operations any agent process performs on itself (ops.c, files.c): one
 * handler per op listed in protocol.h's AGENT_COMMON_OPS. */
int handle_common_op(struct request *req, struct reply *rep);
/* Set by SETTLE(DRAIN_BEFORE_OPS): a named process drains before each op it serves. */
extern int drain_before_ops;

/* SETTLE's work (SettleFlags): 0, or -1 with the reply saying why (as "what: ..."). */
int settle(uint32_t flags, struct reply *rep, const char *what);
#define DECLARE_OP_HANDLER(op, handler) void handler(struct request *req, struct reply *rep);
AGENT_COMMON_OPS(DECLARE_OP_HANDLER)
#undef DECLARE_OP_HANDLER
int write_text_file(const char *path, const char *text);

/* Named processes (procs.c). */
void serve_port(int port_fd);
void put_hello(struct buf *b);
void power_off(void) __attribute__((noreturn));

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
