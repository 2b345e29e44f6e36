/*
 * Operations an agent process performs on itself: memory (mmap, touch,
 * munmap, mprotect, madvise, mlock, munlock), clear_refs, settle, ping, echo,
 * crash.
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

void reply_fail(struct reply *rep, uint16_t status, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	buf_free(&rep->payload);
	rep->status = status;
	rep->error = (uint32_t)err;
	put_raw(&rep->payload, msg, strlen(msg));
}

/* True when the arguments decoded exactly; otherwise the reply says why. */
int args_ok(struct request *req, struct reply *rep)
{
	if (reader_finished(&req->args))
		return 1;
	reply_fail(rep, ST_BAD_REQUEST, 0, "op %u: arguments %s", req->op,
		   req->args.bad ? "are truncated or malformed" : "have trailing bytes");
	return 0;
}

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

static int is_little_endian(void)
{
	const uint16_t probe = 1;

	return *(const uint8_t *)&probe == 1;
}

/* Facts about this guest, sent in HELLO and PING. */
void put_hello(struct buf *b)
{
	struct utsname u;

	if (uname(&u) != 0)
		memset(&u, 0, sizeof(u));
	put_u32(b, AGENT_PROTOCOL_VERSION);
	put_u32(b, (uint32_t)getpid());
	put_u32(b, (uint32_t)page_size());
	put_u8(b, (uint8_t)is_little_endian());
	put_u8(b, (uint8_t)sizeof(long));
	put_str(b, u.machine);
	put_str(b, u.release);
}

void op_ping(struct request *req, struct reply *rep)
{
	if (args_ok(req, rep))
		put_hello(&rep->payload);
}

void op_echo(struct request *req, struct reply *rep)
{
	size_t len;
	const uint8_t *data = get_blob(&req->args, &len);

	if (args_ok(req, rep))
		put_blob(&rep->payload, data, len);
}

void op_getpid(struct request *req, struct reply *rep)
{
	if (args_ok(req, rep))
		put_u32(&rep->payload, (uint32_t)getpid());
}

/* A page-aligned, non-empty range that does not wrap around. */
static int range_ok(struct reply *rep, uint64_t addr, uint64_t len)
{
	uint64_t mask = page_size() - 1;

	if (len == 0 || (addr & mask) || (len & mask) || addr + len < addr) {
		reply_fail(rep, ST_BAD_REQUEST, 0,
			   "range %#llx+%#llx is empty, unaligned to %llu or wraps",
			   (unsigned long long)addr, (unsigned long long)len,
			   (unsigned long long)(mask + 1));
		return 0;
	}
	return 1;
}

static int native_prot(uint8_t prot)
{
	return ((prot & PROT_BIT_READ) ? PROT_READ : 0) |
	       ((prot & PROT_BIT_WRITE) ? PROT_WRITE : 0) |
	       ((prot & PROT_BIT_EXEC) ? PROT_EXEC : 0);
}

/*
 * The file behind a "file" region: on tmpfs, one per region, unlinked at
 * once (it lives as long as the mapping).  The first 8 bytes of file page i
 * hold file_tag + i in the guest's byte order; the rest of the page is zero.
 * Every page is written, so every page is in the page cache (and dirty)
 * before the mapping exists, and the LRU batches are drained after the
 * writes, so every page is on the LRU too.  Without the drain the last
 * written pages would still sit in this CPU's lru_add batch, behind however
 * many folios other activity had queued there (8 to 10 seen): a MAP_LOCKED
 * populate then finds them off the LRU (__mlock_folio() skips them, and
 * folio_mark_accessed() activates them through __lru_cache_activate_folio()),
 * so which pages keep PG_referenced would depend on that unknown count.
 */
static int drain_lru_batches(void);

static int create_region_file(struct reply *rep, uint64_t addr, uint64_t len, uint64_t file_tag)
{
	char path[96];
	uint64_t ps = page_size(), i;
	int fd;

	snprintf(path, sizeof(path), "/tmp/pmh-region-%d-%llx", (int)getpid(),
		 (unsigned long long)addr);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		reply_fail(rep, ST_ERRNO, errno, "create %s: %s", path, strerror(errno));
		return -1;
	}
	unlink(path);
	for (i = 0; i < len / ps; i++) {
		uint64_t value = file_tag + i;

		if (pwrite(fd, &value, sizeof(value), (off_t)(i * ps)) != sizeof(value)) {
			reply_fail(rep, ST_ERRNO, errno, "write page %llu of %s: %s",
				   (unsigned long long)i, path, strerror(errno));
			close(fd);
			return -1;
		}
	}
	if (ftruncate(fd, (off_t)len) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "size %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (drain_lru_batches() != 0) {
		reply_fail(rep, ST_ERRNO, errno, "drain after writing %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * The memfd behind a "memfd" region: memfd_create("pmh") sized to the region
 * by ftruncate(), no page written (every page is a hole until a fault).  The
 * model names it as d_path() does: "/memfd:pmh (deleted)".
 */
static int create_region_memfd(struct reply *rep, uint64_t len)
{
	int fd = memfd_create("pmh", MFD_CLOEXEC);

	if (fd < 0) {
		reply_fail(rep, ST_ERRNO, errno, "memfd_create: %s", strerror(errno));
		return -1;
	}
	if (ftruncate(fd, (off_t)len) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "size memfd: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* MMAP (layout: protocol.h) */
void op_mmap(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);
	uint8_t kind = get_u8(&req->args), shared = get_u8(&req->args);
	uint8_t prot = get_u8(&req->args);
	uint64_t file_tag = get_u64(&req->args);
	uint8_t bits = get_u8(&req->args);
	int flags, fd = -1, err;
	void *p;

	if (!args_ok(req, rep) || !range_ok(rep, addr, len))
		return;
	if (kind > REGION_HUGETLB || shared > 1 || (prot & ~7u) ||
	    (bits & ~(MAP_BIT_FIXED | MAP_BIT_POPULATE | MAP_BIT_LOCKED))) {
		reply_fail(rep, ST_BAD_REQUEST, 0,
			   "mmap: kind %u, shared %u, prot %#x, map bits %#x out of range",
			   kind, shared, prot, bits);
		return;
	}
	flags = (shared ? MAP_SHARED : MAP_PRIVATE) |
		((bits & MAP_BIT_FIXED) ? MAP_FIXED : MAP_FIXED_NOREPLACE) |
		((bits & MAP_BIT_POPULATE) ? MAP_POPULATE : 0) |
		((bits & MAP_BIT_LOCKED) ? MAP_LOCKED : 0);
	if (kind == REGION_ANON)
		flags |= MAP_ANONYMOUS;
	else if (kind == REGION_HUGETLB)
		flags |= MAP_ANONYMOUS | MAP_HUGETLB;
	else if (kind == REGION_MEMFD) {
		if ((fd = create_region_memfd(rep, len)) < 0)
			return;
	} else if ((fd = create_region_file(rep, addr, len, file_tag)) < 0)
		return;
	p = mmap((void *)(uintptr_t)addr, (size_t)len, native_prot(prot), flags, fd, 0);
	err = errno;
	if (fd >= 0)
		close(fd);
	if (p == MAP_FAILED) {
		reply_fail(rep, ST_ERRNO, err, "mmap %#llx+%#llx: %s", (unsigned long long)addr,
			   (unsigned long long)len, strerror(err));
		return;
	}
	if ((uintptr_t)p != addr) {
		munmap(p, (size_t)len);
		reply_fail(rep, ST_ERRNO, EEXIST, "mmap %#llx: kernel placed it at %p "
			   "(MAP_FIXED_NOREPLACE not honoured)", (unsigned long long)addr, p);
		return;
	}
	put_u64(&rep->payload, addr);
}

/* MUNMAP (layout: protocol.h) */
void op_munmap(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);

	if (!args_ok(req, rep) || !range_ok(rep, addr, len))
		return;
	if (munmap((void *)(uintptr_t)addr, (size_t)len) != 0)
		reply_fail(rep, ST_ERRNO, errno, "munmap: %s", strerror(errno));
}

/* MPROTECT (layout: protocol.h) */
void op_mprotect(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);
	uint8_t prot = get_u8(&req->args);

	if (!args_ok(req, rep) || !range_ok(rep, addr, len))
		return;
	if (prot & ~7u) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "mprotect: prot %#x out of range", prot);
		return;
	}
	if (mprotect((void *)(uintptr_t)addr, (size_t)len, native_prot(prot)) != 0)
		reply_fail(rep, ST_ERRNO, errno, "mprotect: %s", strerror(errno));
}

/* MADVISE (layout: protocol.h): the advice is the kernel's own MADV_* number. */
void op_madvise(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);
	int64_t advice = (int64_t)get_u64(&req->args);

	if (!args_ok(req, rep) || !range_ok(rep, addr, len))
		return;
	if (advice < INT_MIN || advice > INT_MAX) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "madvise: advice %lld is no C int",
			   (long long)advice);
		return;
	}
	if (madvise((void *)(uintptr_t)addr, (size_t)len, (int)advice) != 0)
		reply_fail(rep, ST_ERRNO, errno, "madvise(%d): %s", (int)advice, strerror(errno));
}

/* MLOCK (layout: protocol.h): mlock(), or mlock2(MLOCK_ONFAULT). */
void op_mlock(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);
	uint8_t onfault = get_u8(&req->args);
	int rc;

	if (!args_ok(req, rep) || !range_ok(rep, addr, len))
		return;
	if (onfault > 1) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "mlock: onfault %u is not 0 or 1", onfault);
		return;
	}
	if (onfault)
		rc = mlock2((void *)(uintptr_t)addr, (size_t)len, MLOCK_ONFAULT);
	else
		rc = mlock((void *)(uintptr_t)addr, (size_t)len);
	if (rc != 0)
		reply_fail(rep, ST_ERRNO, errno, "mlock%s: %s", onfault ? "2(MLOCK_ONFAULT)" : "",
			   strerror(errno));
}

/* MUNLOCK (layout: protocol.h) */
void op_munlock(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);

	if (!args_ok(req, rep) || !range_ok(rep, addr, len))
		return;
	if (munlock((void *)(uintptr_t)addr, (size_t)len) != 0)
		reply_fail(rep, ST_ERRNO, errno, "munlock: %s", strerror(errno));
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4 /* include/uapi/linux/mman.h, since 5.7 */
#endif

/* MREMAP (layout: protocol.h): REMAP_BIT_* -> MREMAP_*; replies the new address. */
void op_mremap(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), old_len = get_u64(&req->args);
	uint64_t new_len = get_u64(&req->args);
	uint8_t bits = get_u8(&req->args);
	uint64_t new_addr = get_u64(&req->args);
	int flags = 0;
	void *got;

	if (!args_ok(req, rep) || !range_ok(rep, addr, old_len) || !range_ok(rep, addr, new_len))
		return;
	if (bits & ~(REMAP_BIT_MAYMOVE | REMAP_BIT_FIXED | REMAP_BIT_DONTUNMAP)) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "mremap: flags %#x out of range", bits);
		return;
	}
	if (bits & REMAP_BIT_MAYMOVE)
		flags |= MREMAP_MAYMOVE;
	if (bits & REMAP_BIT_FIXED)
		flags |= MREMAP_FIXED;
	if (bits & REMAP_BIT_DONTUNMAP)
		flags |= MREMAP_DONTUNMAP;
	got = mremap((void *)(uintptr_t)addr, (size_t)old_len, (size_t)new_len, flags,
		     (void *)(uintptr_t)new_addr);
	if (got == MAP_FAILED) {
		reply_fail(rep, ST_ERRNO, errno, "mremap: %s", strerror(errno));
		return;
	}
	put_u64(&rep->payload, (uint64_t)(uintptr_t)got);
}

static sigjmp_buf touch_env;
static volatile sig_atomic_t touch_armed;
static volatile sig_atomic_t touch_signal;
static volatile uintptr_t touch_fault_addr;

/* SIGSEGV/SIGBUS during a touch: note it and unwind to op_touch. */
static void touch_fault(int sig, siginfo_t *si, void *ctx)
{
	(void)ctx;
	if (!touch_armed) {
		/* Not ours: let the fault kill the process as it would have. */
		signal(sig, SIG_DFL);
		return;
	}
	touch_signal = sig;
	touch_fault_addr = (uintptr_t)si->si_addr;
	siglongjmp(touch_env, 1);
}

static void set_fault_handlers(const struct sigaction *sa, struct sigaction *old_segv,
			       struct sigaction *old_bus)
{
	sigaction(SIGSEGV, sa, old_segv);
	sigaction(SIGBUS, sa, old_bus);
}

/*
 * Touch pages one by one, in order.  Write 1: store tag + k (u64, the guest's
 * byte order) at the start of page k.  Write 2 (fill): set every byte of each
 * page to tag's low byte.  Read: load the u64 at the start of each page.  A
 * fault stops the touch; it is reported, not fatal.
 */
/*
 * A u64 store or load whose first access is at the lowest address.  A 32-bit
 * guest splits a u64 access in two, in whatever order the compiler picks; a
 * refused page must fault at its own address (the model's SIGSEGV address),
 * so the low word goes first, explicitly.  64-bit guests: one access.
 */
static void store_u64(volatile uint64_t *p, uint64_t v)
{
#if UINTPTR_MAX == 0xffffffffu
	volatile uint32_t *q = (volatile uint32_t *)p;
	union { uint64_t v; uint32_t w[2]; } u = { .v = v };

	q[0] = u.w[0];
	q[1] = u.w[1];
#else
	*p = v;
#endif
}

static uint64_t load_u64(volatile uint64_t *p)
{
#if UINTPTR_MAX == 0xffffffffu
	volatile uint32_t *q = (volatile uint32_t *)p;
	union { uint64_t v; uint32_t w[2]; } u;

	u.w[0] = q[0];
	u.w[1] = q[1];
	return u.v;
#else
	return *p;
#endif
}

static uint64_t touch_pages(uint64_t addr, uint64_t npages, int write, uint64_t tag,
			    uint64_t *values)
{
	volatile uint64_t done = 0;
	uint64_t ps = page_size();

	touch_signal = 0;
	touch_fault_addr = 0;
	touch_armed = 1;
	if (sigsetjmp(touch_env, 1) == 0) {
		for (; done < npages; done++) {
			volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)(addr + done * ps);

			if (write == 2) {
				/* Word by word from the page's start, not memset(): powerpc's
				 * glibc memset() stores the tail first, so a refused page would
				 * fault at its last word instead of its address. */
				uint64_t word = (tag & 0xff) * 0x0101010101010101ull, w;

				for (w = 0; w < ps / 8; w++)
					store_u64(p + w, word);
			} else if (write)
				store_u64(p, tag + done);
			else
				values[done] = load_u64(p);
		}
	}
	touch_armed = 0;
	return done;
}

/* TOUCH (layout: protocol.h); values[] are returned for reads only. */
void op_touch(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), npages = get_u64(&req->args);
	uint8_t write = get_u8(&req->args);
	uint64_t tag = get_u64(&req->args), done, i;
	struct sigaction sa, old_segv, old_bus;
	uint64_t *values = NULL;

	if (!args_ok(req, rep))
		return;
	if (write > 2 || npages > (FRAME_MAX_PAYLOAD - 64) / 8) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "touch: write %u or %llu pages out of range",
			   write, (unsigned long long)npages);
		return;
	}
	if (!range_ok(rep, addr, npages * page_size()))
		return;
	if (!write && !(values = calloc((size_t)npages, sizeof(*values)))) {
		reply_fail(rep, ST_ERRNO, ENOMEM, "touch: no memory for %llu values",
			   (unsigned long long)npages);
		return;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = touch_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	set_fault_handlers(&sa, &old_segv, &old_bus);
	done = touch_pages(addr, npages, write, tag, values);
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	put_u64(&rep->payload, done);
	put_u32(&rep->payload, (uint32_t)touch_signal);
	put_u64(&rep->payload, (uint64_t)touch_fault_addr);
	put_u32(&rep->payload, write ? 0 : (uint32_t)done);
	for (i = 0; !write && i < done; i++)
		put_u64(&rep->payload, values[i]);
	free(values);
}

int write_text_file(const char *path, const char *text)
{
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -1;
	n = write(fd, text, len);
	err = errno;
	close(fd);
	errno = err;
	return n == (ssize_t)len ? 0 : -1;
}

/* CLEAR_REFS (layout: protocol.h): writes the value to /proc/self/clear_refs. */
void op_clear_refs(struct request *req, struct reply *rep)
{
	uint32_t value = get_u32(&req->args);
	char text[16];

	if (!args_ok(req, rep))
		return;
	snprintf(text, sizeof(text), "%u", value);
	if (write_text_file("/proc/self/clear_refs", text) != 0)
		reply_fail(rep, ST_ERRNO, errno, "clear_refs %u: %s", value, strerror(errno));
}

/*
 * Drain this CPU's folio batches (lru_add, lru_deactivate*, lru_lazyfree,
 * activate, mlock): munmap() of any VMA calls lru_add_drain() before it
 * tears down page tables (unmap_region()/vms_clear_ptes() in mm/vma.c).  The
 * scratch mapping is never touched, so it leaves nothing behind.  With the
 * harness's single vCPU this CPU's batches are all the batches there are.
 */
static int drain_lru_batches(void)
{
	size_t ps = (size_t)page_size();
	void *p = mmap(NULL, ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return -1;
	return munmap(p, ps);
}

int drain_before_ops;

int settle(uint32_t flags, struct reply *rep, const char *what)
{
	if (flags & ~(uint32_t)(SETTLE_DRAIN_LRU | SETTLE_SYNC | SETTLE_DRAIN_BEFORE_OPS)) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "%s: unknown settle flags %#x", what, flags);
		return -1;
	}
	if ((flags & SETTLE_SYNC))
		sync();
	if ((flags & SETTLE_DRAIN_LRU) && drain_lru_batches() != 0) {
		reply_fail(rep, ST_ERRNO, errno, "%s: drain: %s", what, strerror(errno));
		return -1;
	}
	if (flags & SETTLE_DRAIN_BEFORE_OPS)
		drain_before_ops = 1;
	return 0;
}

/* SETTLE (layout: protocol.h) */
void op_settle(struct request *req, struct reply *rep)
{
	uint32_t flags = get_u32(&req->args);

	if (!args_ok(req, rep))
		return;
	settle(flags, rep, "settle");
}

/*
 * args: u8 kind.  PANIC: sysrq 'c'; ABORT: abort() this process; HANG: stop
 * serving for good (every signal that can be blocked is, then pause() until
 * the guest ends): the kernel runs on, the channel stays open, nobody answers.
 * No reply on success: the process (or the kernel) is gone or silent.
 */
void op_crash(struct request *req, struct reply *rep)
{
	uint8_t kind = get_u8(&req->args);

	if (!args_ok(req, rep))
		return;
	agent_log("crash %u requested", kind);
	if (kind == CRASH_PANIC) {
		if (write_text_file("/proc/sysrq-trigger", "c") != 0)
			reply_fail(rep, ST_ERRNO, errno, "sysrq-trigger: %s", strerror(errno));
		return;
	}
	if (kind == CRASH_ABORT)
		abort();
	if (kind == CRASH_HANG) {
		sigset_t all;

		sigfillset(&all);
		sigprocmask(SIG_BLOCK, &all, NULL);
		for (;;)
			pause();
	}
	reply_fail(rep, ST_BAD_REQUEST, 0, "crash: unknown kind %u", kind);
}

/* Ops every agent process serves on itself; 0 if op is not one of them. */
int handle_common_op(struct request *req, struct reply *rep)
{
	switch (req->op) {
#define CASE_OP(op, handler) case op: handler(req, rep); break;
	AGENT_COMMON_OPS(CASE_OP)
#undef CASE_OP
	default: return 0;
	}
	return 1;
}
