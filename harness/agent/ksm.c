/*
 * KSM_SCAN: make ksmd run an exact number of full scans, then stop it.
 *
 * mm/ksm.c (6.12): ksm_scan_thread() runs ksm_do_scan(pages_to_scan) and then,
 * while it should run, sleeps sleep_millisecs in ksm_iter_wait, waking early
 * when sleep_millisecs changes (sleep_millisecs_store()).  ksm_do_scan() returns
 * at the end of a full scan (scan_get_next_rmap_item() returns NULL after
 * ksm_scan.seqnr++), so with pages_to_scan UINT_MAX every call is exactly one
 * whole scan, started at the list head.  With sleep_millisecs a day, ksmd then
 * sleeps after each scan until the value changes: one change, one more scan.
 * A change is made only once full_scans moved and ksmd is asleep ('S' in
 * /proc/PID/stat; after seqnr++ it takes no lock before it sleeps), so it has
 * read the old value and the change wakes it.  run=0 at the end leaves merged
 * pages merged (run=2 would unmerge them).  Every wait is bounded by the
 * caller's timeout: ETIMEDOUT, the knobs restored.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define KSM_DIR "/sys/kernel/mm/ksm/"
/* A day: ksmd never wakes by itself while a step runs. */
#define KSM_SLEEP_MS 86400000u

static int read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	err = errno;
	close(fd);
	errno = err;
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

static int read_knob(const char *name, unsigned long long *value)
{
	char path[128], text[64], *end;

	snprintf(path, sizeof(path), KSM_DIR "%s", name);
	if (read_small(path, text, sizeof(text)) != 0)
		return -1;
	errno = 0;
	*value = strtoull(text, &end, 10);
	if (end == text || errno) {
		errno = EIO;
		return -1;
	}
	return 0;
}

static int write_knob(const char *name, unsigned long long value)
{
	char path[128], text[32];

	snprintf(path, sizeof(path), KSM_DIR "%s", name);
	snprintf(text, sizeof(text), "%llu\n", value);
	return write_text_file(path, text);
}

/* ksmd's pid (a kernel thread named "ksmd"), 0 if none. */
static pid_t ksmd_pid(void)
{
	static pid_t cached;
	DIR *dir;
	struct dirent *d;

	if (cached)
		return cached;
	dir = opendir("/proc");
	if (!dir)
		return 0;
	while ((d = readdir(dir))) {
		char path[64], comm[32];
		pid_t pid = (pid_t)atoi(d->d_name);

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/comm", pid);
		if (read_small(path, comm, sizeof(comm)) == 0 && strcmp(comm, "ksmd\n") == 0) {
			cached = pid;
			break;
		}
	}
	closedir(dir);
	return cached;
}

/* The state letter of /proc/PID/stat ('S' sleeping, 'R' running, ...), 0 if unknown. */
static char task_state(pid_t pid)
{
	char path[64], text[512], *paren;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (read_small(path, text, sizeof(text)) != 0)
		return 0;
	paren = strrchr(text, ')');
	return paren && paren[1] == ' ' ? paren[2] : 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait until full_scans >= target and ksmd sleeps; -1 with errno on failure. */
static int wait_scans(pid_t ksmd, unsigned long long target, uint64_t deadline,
		      unsigned long long *scans)
{
	for (;;) {
		if (read_knob("full_scans", scans) != 0)
			return -1;
		if (*scans >= target && task_state(ksmd) == 'S')
			return 0;
		if (now_ms() >= deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		usleep(1000);
	}
}

/* KSM_SCAN (layout: protocol.h). */
void op_ksm_scan(struct request *req, struct reply *rep)
{
	uint32_t nscans = get_u32(&req->args);
	uint8_t zero_pages = get_u8(&req->args);
	uint32_t timeout_ms = get_u32(&req->args);
	unsigned long long run, sleep_ms, to_scan, use_zero = 0, smart = 0, sharing = 0;
	unsigned long long before = 0, scans = 0, next_sleep;
	uint64_t deadline;
	const char *what = NULL;
	int err = 0;
	pid_t ksmd;
	uint32_t i;

	if (!args_ok(req, rep))
		return;
	if (zero_pages > 2 || nscans == 0) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "ksm_scan: use_zero_pages %u or scans %u",
			   zero_pages, nscans);
		return;
	}
	ksmd = ksmd_pid();
	if (!ksmd) {
		reply_fail(rep, ST_ERRNO, ENOENT, "ksm_scan: no ksmd thread (CONFIG_KSM?)");
		return;
	}
	if (read_knob("run", &run) || read_knob("sleep_millisecs", &sleep_ms) ||
	    read_knob("pages_to_scan", &to_scan) || read_knob("use_zero_pages", &use_zero) ||
	    read_knob("smart_scan", &smart) || read_knob("max_page_sharing", &sharing)) {
		reply_fail(rep, ST_ERRNO, errno, "ksm_scan: reading " KSM_DIR ": %s",
			   strerror(errno));
		return;
	}
	if (run != 0) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "ksm_scan: ksmd runs already (run = %llu)", run);
		return;
	}
	deadline = now_ms() + timeout_ms;
	next_sleep = sleep_ms == KSM_SLEEP_MS ? KSM_SLEEP_MS + 1 : KSM_SLEEP_MS;
	if (write_knob("pages_to_scan", 4294967295ull)) {
		what = "pages_to_scan";
		goto fail;
	}
	if (zero_pages != 2 && write_knob("use_zero_pages", zero_pages)) {
		what = "use_zero_pages";
		goto fail;
	}
	/* Any sleep in ksm_iter_wait ends; ksmd settles in ksm_thread_wait (run 0). */
	if (write_knob("sleep_millisecs", next_sleep)) {
		what = "sleep_millisecs";
		goto fail;
	}
	if (read_knob("full_scans", &before) || wait_scans(ksmd, before, deadline, &scans)) {
		what = "waiting for ksmd to sleep";
		goto fail;
	}
	if (write_knob("run", 1)) {
		what = "run";
		goto fail;
	}
	for (i = 1; i <= nscans; i++) {
		if (i > 1) {
			next_sleep = next_sleep == KSM_SLEEP_MS ? KSM_SLEEP_MS + 1 : KSM_SLEEP_MS;
			if (write_knob("sleep_millisecs", next_sleep)) {
				what = "sleep_millisecs";
				goto fail;
			}
		}
		if (wait_scans(ksmd, before + i, deadline, &scans)) {
			what = "waiting for a full scan";
			goto fail;
		}
		if (scans != before + i) {
			errno = EPROTO;
			what = "full_scans moved by more than one scan";
			goto fail;
		}
	}
fail:
	if (what)
		err = errno;
	/* Restore: run 0 first (takes ksm_thread_mutex: after any scan in progress). */
	write_knob("run", 0);
	write_knob("pages_to_scan", to_scan);
	if (zero_pages != 2)
		write_knob("use_zero_pages", use_zero);
	write_knob("sleep_millisecs", sleep_ms);
	if (what) {
		reply_fail(rep, ST_ERRNO, err, "ksm_scan: %s: %s (full_scans %llu -> %llu of %u)",
			   what, strerror(err), before, scans, nscans);
		return;
	}
	put_u64(&rep->payload, before);
	put_u64(&rep->payload, scans);
	put_u8(&rep->payload, (uint8_t)smart);
	put_u32(&rep->payload, (uint32_t)sharing);
}
