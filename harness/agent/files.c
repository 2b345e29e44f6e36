/*
 * File operations: a raw read (as root or as an unprivileged uid) with
 * optional seeks, a write (sysctl and sysfs knobs), and the PAGEMAP_SCAN
 * ioctl on an opened /proc/PID/pagemap (as root or as an unprivileged uid).
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

#define MAX_SEEKS 64
#define PATH_LEN 4096

struct read_job {
	/* what to do */
	char path[PATH_LEN];
	int oflags;
	uint32_t uid, gid;
	uint32_t nseeks;
	int whence[MAX_SEEKS];
	int64_t seek_offset[MAX_SEEKS];
	int use_pread;
	int64_t pread_offset;
	uint64_t count;
	int loop;
	/* what happened */
	int stage;
	int err;
	uint32_t seeks_done;
	int64_t seek_result[MAX_SEEKS];
	int64_t final_pos;
	uint8_t *data;
	uint64_t got;
};

static int native_whence(uint8_t whence)
{
	switch (whence) {
	case SEEK_PROTO_SET: return SEEK_SET;
	case SEEK_PROTO_CUR: return SEEK_CUR;
	case SEEK_PROTO_END: return SEEK_END;
	case SEEK_PROTO_DATA: return SEEK_DATA;
	case SEEK_PROTO_HOLE: return SEEK_HOLE;
	default: return -1;
	}
}

static void fail_stage(struct read_job *job, int stage)
{
	job->stage = stage;
	job->err = errno;
}

/* One read() or pread() call, retried on EINTR. */
static ssize_t read_once(struct read_job *job, int fd)
{
	uint8_t *dst = job->data + job->got;
	size_t want = (size_t)(job->count - job->got);
	ssize_t n;

	do {
		if (job->use_pread)
			n = pread(fd, dst, want, (off_t)(job->pread_offset + (int64_t)job->got));
		else
			n = read(fd, dst, want);
	} while (n < 0 && errno == EINTR);
	return n;
}

/* open, seek, read: fills the "what happened" half of job. */
static void run_read(struct read_job *job)
{
	uint32_t i;
	off_t pos;
	int fd = open(job->path, job->oflags);

	job->final_pos = 0;
	if (fd < 0) {
		fail_stage(job, READ_STAGE_OPEN);
		return;
	}
	for (i = 0; i < job->nseeks; i++) {
		pos = lseek(fd, (off_t)job->seek_offset[i], job->whence[i]);
		job->seek_result[i] = pos < 0 ? -(int64_t)errno : (int64_t)pos;
		job->seeks_done = i + 1;
		if (pos < 0) {
			fail_stage(job, READ_STAGE_SEEK);
			break;
		}
	}
	while (job->stage == READ_STAGE_NONE && job->got < job->count) {
		ssize_t n = read_once(job, fd);

		if (n < 0)
			fail_stage(job, READ_STAGE_READ);
		else
			job->got += (uint64_t)n;
		if (n <= 0 || !job->loop)
			break;
	}
	pos = lseek(fd, 0, SEEK_CUR);
	job->final_pos = pos < 0 ? -(int64_t)errno : (int64_t)pos;
	close(fd);
}

/* No groups, the given gid and uid (real, effective, saved), no capabilities. */
static int drop_privileges(uint32_t uid, uint32_t gid)
{
	struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_setgroups, 0, NULL) != 0 ||
	    syscall(SYS_setresgid, gid, gid, gid) != 0 ||
	    syscall(SYS_setresuid, uid, uid, uid) != 0)
		return -1;
	return (int)syscall(SYS_capset, &header, data);
}

/* Runs in a clone(CLONE_VM | CLONE_VFORK) child: shares the caller's memory. */
static int read_as_user(void *arg)
{
	struct read_job *job = arg;

	if (drop_privileges(job->uid, job->gid) != 0) {
		fail_stage(job, READ_STAGE_CREDS);
		return 1;
	}
	run_read(job);
	return 0;
}

/*
 * The unprivileged read runs in a child that shares this process's address
 * space (CLONE_VM) while this process waits (CLONE_VFORK).  A fork() would
 * write-protect and share every private anonymous page of this process
 * (copy-on-write), changing the very page state the harness observes.
 */
static int in_child(int (*fn)(void *), void *job, struct reply *rep, const char *what)
{
	static uint8_t stack[64 * 1024] __attribute__((aligned(16)));
	int status;
	pid_t pid = clone(fn, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, job);

	if (pid < 0) {
		reply_fail(rep, ST_ERRNO, errno, "%s: clone: %s", what, strerror(errno));
		return -1;
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			reply_fail(rep, ST_ERRNO, errno, "%s: waitpid: %s", what, strerror(errno));
			return -1;
		}
	}
	if (WIFSIGNALED(status)) {
		reply_fail(rep, ST_ERRNO, EINTR, "%s: child killed by signal %d", what,
			   WTERMSIG(status));
		return -1;
	}
	return 0;
}

static int read_in_child(struct read_job *job, struct reply *rep)
{
	return in_child(read_as_user, job, rep, "read_file");
}

/* A gid left as UID_KEEP follows a given uid (the reader's own group). */
static uint32_t gid_for(uint32_t uid, uint32_t gid)
{
	return uid != UID_KEEP && gid == UID_KEEP ? uid : gid;
}

/* The buffer a read fills; 0, or -1 with the reply saying why (as "what: ..."). */
static int alloc_read_data(struct read_job *job, struct reply *rep, const char *what)
{
	job->data = malloc(job->count ? (size_t)job->count : 1);
	if (job->data)
		return 0;
	reply_fail(rep, ST_ERRNO, ENOMEM, "%s: no memory for %llu bytes", what,
		   (unsigned long long)job->count);
	return -1;
}

static int decode_open_flags(uint32_t bits)
{
	if (bits & ~(uint32_t)OPEN_BIT_NONBLOCK)
		return -1;
	return O_RDONLY | O_CLOEXEC | ((bits & OPEN_BIT_NONBLOCK) ? O_NONBLOCK : 0);
}

/* Fill job from the arguments; 0 on success, else the reply says why. */
static int decode_read_job(struct request *req, struct reply *rep, struct read_job *job)
{
	struct reader *r = &req->args;
	uint32_t i, oflags_bits;

	get_cstr(r, job->path, sizeof(job->path), 0);
	job->uid = get_u32(r);
	job->gid = get_u32(r);
	oflags_bits = get_u32(r);
	job->nseeks = get_u32(r);
	for (i = 0; i < job->nseeks && i < MAX_SEEKS && !r->bad; i++) {
		job->whence[i] = native_whence(get_u8(r));
		job->seek_offset[i] = (int64_t)get_u64(r);
		if (job->whence[i] < 0)
			r->bad = 1;
	}
	job->use_pread = get_u8(r);
	job->pread_offset = (int64_t)get_u64(r);
	job->count = get_u64(r);
	job->loop = get_u8(r);
	job->oflags = decode_open_flags(oflags_bits);
	if (!args_ok(req, rep))
		return -1;
	if (job->nseeks > MAX_SEEKS || job->oflags < 0 || job->use_pread > 1 || job->loop > 1 ||
	    job->count > FRAME_MAX_PAYLOAD - 4096) {
		reply_fail(rep, ST_BAD_REQUEST, 0,
			   "read_file: %u seeks (max %u), open bits %#x, count %llu (max %u)",
			   job->nseeks, MAX_SEEKS, oflags_bits, (unsigned long long)job->count,
			   FRAME_MAX_PAYLOAD - 4096);
		return -1;
	}
	job->gid = gid_for(job->uid, job->gid);
	return 0;
}

static void put_read_result(struct buf *b, const struct read_job *job)
{
	uint32_t i;

	put_u8(b, (uint8_t)job->stage);
	put_u32(b, (uint32_t)job->err);
	put_u32(b, job->seeks_done);
	for (i = 0; i < job->seeks_done; i++)
		put_u64(b, (uint64_t)job->seek_result[i]);
	put_u64(b, (uint64_t)job->final_pos);
	put_blob(b, job->data, (size_t)job->got);
}

/* READ_FILE (layout: protocol.h) */
void op_read_file(struct request *req, struct reply *rep)
{
	struct read_job *job = calloc(1, sizeof(*job));

	if (!job) {
		reply_fail(rep, ST_ERRNO, ENOMEM, "read_file: no memory");
		return;
	}
	if (decode_read_job(req, rep, job) != 0)
		goto out;
	if (alloc_read_data(job, rep, "read_file") != 0)
		goto out;
	if (job->uid == UID_KEEP)
		run_read(job);
	else if (read_in_child(job, rep) != 0)
		goto out;
	put_read_result(&rep->payload, job);
out:
	free(job->data);
	free(job);
}

/* Most reads one READ_FILES request may carry. */
#define MAX_BATCH_READS 1024

/* READ_FILES' reads, all made as one uid/gid. */
struct read_batch {
	struct read_job *jobs;
	uint32_t n;
	uint32_t uid, gid;
};

static void run_batch(struct read_batch *batch)
{
	uint32_t i;

	for (i = 0; i < batch->n; i++)
		run_read(&batch->jobs[i]);
}

/* Runs in a clone(CLONE_VM | CLONE_VFORK) child, as read_as_user() does. */
static int batch_as_user(void *arg)
{
	struct read_batch *batch = arg;
	uint32_t i;

	if (drop_privileges(batch->uid, batch->gid) != 0) {
		for (i = 0; i < batch->n; i++)
			fail_stage(&batch->jobs[i], READ_STAGE_CREDS);
		return 1;
	}
	run_batch(batch);
	return 0;
}

/* Decode the reads of a READ_FILES request; 0, or -1 with the reply saying why. */
static int decode_batch(struct request *req, struct reply *rep, struct read_batch *batch,
			uint32_t *settle_flags)
{
	struct reader *r = &req->args;
	uint64_t total = 0;
	uint32_t i;

	batch->uid = get_u32(r);
	batch->gid = get_u32(r);
	*settle_flags = get_u32(r);
	batch->n = get_u32(r);
	if (r->bad || batch->n > MAX_BATCH_READS) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "read_files: %u reads (max %u)", batch->n,
			   MAX_BATCH_READS);
		return -1;
	}
	batch->jobs = calloc(batch->n ? batch->n : 1, sizeof(*batch->jobs));
	if (!batch->jobs) {
		reply_fail(rep, ST_ERRNO, ENOMEM, "read_files: no memory");
		return -1;
	}
	for (i = 0; i < batch->n && !r->bad; i++) {
		struct read_job *job = &batch->jobs[i];

		get_cstr(r, job->path, sizeof(job->path), 0);
		job->oflags = O_RDONLY | O_CLOEXEC;
		job->use_pread = get_u8(r);
		job->pread_offset = (int64_t)get_u64(r);
		job->count = get_u64(r);
		job->loop = get_u8(r);
		if (job->use_pread > 1 || job->loop > 1)
			r->bad = 1;
		total += job->count;
	}
	if (!args_ok(req, rep))
		return -1;
	if (total > FRAME_MAX_PAYLOAD - 4096 - 9 * (uint64_t)batch->n) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "read_files: %llu bytes in all (max %u)",
			   (unsigned long long)total, FRAME_MAX_PAYLOAD - 4096 - 9 * batch->n);
		return -1;
	}
	batch->gid = gid_for(batch->uid, batch->gid);
	for (i = 0; i < batch->n; i++) {
		if (alloc_read_data(&batch->jobs[i], rep, "read_files") != 0)
			return -1;
	}
	return 0;
}

/*
 * READ_FILES (layout: protocol.h): SETTLE first, then every read as READ_FILE
 * makes it (no seeks), all in one child when they are made as another uid: a
 * check's reads in one round trip and one credential switch.
 */
void op_read_files(struct request *req, struct reply *rep)
{
	struct read_batch batch = { 0 };
	uint32_t settle_flags, i;

	if (decode_batch(req, rep, &batch, &settle_flags) != 0)
		goto out;
	if (settle(settle_flags, rep, "read_files") != 0)
		goto out;
	if (batch.uid == UID_KEEP)
		run_batch(&batch);
	else if (in_child(batch_as_user, &batch, rep, "read_files") != 0)
		goto out;
	put_u32(&rep->payload, batch.n);
	for (i = 0; i < batch.n; i++) {
		put_u8(&rep->payload, (uint8_t)batch.jobs[i].stage);
		put_u32(&rep->payload, (uint32_t)batch.jobs[i].err);
		put_blob(&rep->payload, batch.jobs[i].data, (size_t)batch.jobs[i].got);
	}
out:
	if (batch.jobs) {
		for (i = 0; i < batch.n; i++)
			free(batch.jobs[i].data);
	}
	free(batch.jobs);
}

/* WRITE_FILE (layout: protocol.h): one write() call, as sysctl and sysfs
 * files expect. */
void op_write_file(struct request *req, struct reply *rep)
{
	char path[PATH_LEN];
	size_t len;
	const uint8_t *data;
	uint32_t flags;
	int fd, oflags = O_WRONLY | O_CLOEXEC;
	ssize_t n;

	get_cstr(&req->args, path, sizeof(path), 0);
	data = get_blob(&req->args, &len);
	flags = get_u32(&req->args);
	if (!args_ok(req, rep))
		return;
	if (flags & ~(uint32_t)WRITE_BIT_CREATE) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "write_file: unknown flags %#x", flags);
		return;
	}
	if (flags & WRITE_BIT_CREATE)
		oflags |= O_CREAT | O_TRUNC;
	fd = open(path, oflags, 0644);
	if (fd < 0) {
		reply_fail(rep, ST_ERRNO, errno, "open %s: %s", path, strerror(errno));
		return;
	}
	do
		n = write(fd, data, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		reply_fail(rep, ST_ERRNO, errno, "write %s: %s", path, strerror(errno));
	else
		put_u64(&rep->payload, (uint64_t)n);
	close(fd);
}

/*
 * PAGEMAP_SCAN (include/uapi/linux/fs.h, 6.7+).  The build's libc headers may
 * predate it, so the struct and the request number are spelled out here;
 * _IOWR() encodes them for the architecture being built.
 */
struct pmh_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
_Static_assert(sizeof(struct pmh_pm_scan_arg) == 96, "struct pm_scan_arg is 96 bytes");
#define PMH_PAGEMAP_SCAN _IOWR('f', 16, struct pmh_pm_scan_arg)
#define PAGE_REGION_BYTES 24u

struct scan_job {
	char path[PATH_LEN];
	uint32_t uid, gid;
	int arg_null;
	struct pmh_pm_scan_arg arg;
	uint8_t *vec;
	size_t vec_bytes;
	/* what happened */
	int stage;
	int err;
	int64_t ret;
};

/* open, ioctl, close: fills the "what happened" half of job. */
static void run_scan(struct scan_job *job)
{
	long ret;
	int fd = open(job->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		job->stage = READ_STAGE_OPEN;
		job->err = errno;
		return;
	}
	do
		ret = ioctl(fd, PMH_PAGEMAP_SCAN, job->arg_null ? NULL : &job->arg);
	while (ret < 0 && errno == EINTR);
	job->ret = ret < 0 ? -(int64_t)errno : (int64_t)ret;
	close(fd);
}

static int scan_as_user(void *arg)
{
	struct scan_job *job = arg;

	if (drop_privileges(job->uid, job->gid) != 0) {
		job->stage = READ_STAGE_CREDS;
		job->err = errno;
		return 1;
	}
	run_scan(job);
	return 0;
}

/* PAGEMAP_SCAN (layout: protocol.h) */
void op_pagemap_scan(struct request *req, struct reply *rep)
{
	struct reader *r = &req->args;
	struct scan_job *job = calloc(1, sizeof(*job));
	uint8_t vec_mode;

	if (!job) {
		reply_fail(rep, ST_ERRNO, ENOMEM, "pagemap_scan: no memory");
		return;
	}
	get_cstr(r, job->path, sizeof(job->path), 0);
	job->uid = get_u32(r);
	job->gid = get_u32(r);
	job->arg_null = get_u8(r);
	job->arg.size = get_u64(r);
	job->arg.flags = get_u64(r);
	job->arg.start = get_u64(r);
	job->arg.end = get_u64(r);
	job->arg.walk_end = get_u64(r);
	vec_mode = get_u8(r);
	job->arg.vec = get_u64(r);
	job->arg.vec_len = get_u64(r);
	job->arg.max_pages = get_u64(r);
	job->arg.category_inverted = get_u64(r);
	job->arg.category_mask = get_u64(r);
	job->arg.category_anyof_mask = get_u64(r);
	job->arg.return_mask = get_u64(r);
	if (!args_ok(req, rep))
		goto out;
	if (job->arg_null > 1 || vec_mode > SCAN_VEC_BUFFER ||
	    (vec_mode == SCAN_VEC_BUFFER && (job->arg.vec_len == 0 ||
					     job->arg.vec_len > SCAN_VEC_MAX))) {
		reply_fail(rep, ST_BAD_REQUEST, 0,
			   "pagemap_scan: arg_null %d, vec mode %u, buffer of %llu records (1..%u)",
			   job->arg_null, vec_mode, (unsigned long long)job->arg.vec_len,
			   SCAN_VEC_MAX);
		goto out;
	}
	if (vec_mode == SCAN_VEC_BUFFER) {
		job->vec_bytes = (size_t)job->arg.vec_len * PAGE_REGION_BYTES;
		job->vec = malloc(job->vec_bytes);
		if (!job->vec) {
			reply_fail(rep, ST_ERRNO, ENOMEM, "pagemap_scan: no memory for %zu bytes",
				   job->vec_bytes);
			goto out;
		}
		memset(job->vec, SCAN_VEC_FILL, job->vec_bytes);
		job->arg.vec = (uint64_t)(uintptr_t)job->vec;
	}
	job->gid = gid_for(job->uid, job->gid);
	if (job->uid == UID_KEEP)
		run_scan(job);
	else if (in_child(scan_as_user, job, rep, "pagemap_scan") != 0)
		goto out;
	put_u8(&rep->payload, (uint8_t)job->stage);
	put_u32(&rep->payload, (uint32_t)job->err);
	put_u64(&rep->payload, (uint64_t)job->ret);
	put_u64(&rep->payload, job->arg.walk_end);
	put_blob(&rep->payload, job->vec, job->vec_bytes);
out:
	free(job->vec);
	free(job);
}
