/* The process's userfaultfd: UFFD_REGISTER (mode WP) and UFFD_WP (UFFDIO_WRITEPROTECT).
 *
 * One userfaultfd per agent process, opened by the first UFFD_REGISTER in it with
 * UFFDIO_API asking for the wanted features the kernel has (fs/userfaultfd.c
 * userfaultfd_api() fails the whole call on a feature it lacks, and a context takes
 * UFFDIO_API once, so a probe fd asks first). No thread reads it: scenarios ask for
 * UFFD_FEATURE_WP_ASYNC, with which a write to a write-protected page only clears the
 * uffd-wp bit (do_wp_page()); without it such a write would wait for a reader forever.
 * A forked child inherits the parent's descriptor, whose context is the parent's mm:
 * the child opens its own (the owner pid says whose it is). */

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* 6.4 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* 6.7 */
#endif

static int uffd = -1;
static pid_t uffd_owner;
static uint64_t uffd_features;

static int uffd_open(void)
{
	return (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
}

/* The open userfaultfd of this process, opened with wanted & available features. */
static int uffd_get(uint64_t wanted, struct reply *rep)
{
	struct uffdio_api api;
	int probe, fd;

	if (uffd >= 0 && uffd_owner == getpid())
		return uffd;
	if (uffd >= 0)
		close(uffd); /* the parent's, inherited through fork */
	uffd = -1;
	probe = uffd_open();
	if (probe < 0) {
		reply_fail(rep, ST_ERRNO, errno, "userfaultfd: %s", strerror(errno));
		return -1;
	}
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	if (ioctl(probe, UFFDIO_API, &api) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "UFFDIO_API (probe): %s", strerror(errno));
		close(probe);
		return -1;
	}
	close(probe);
	fd = uffd_open();
	if (fd < 0) {
		reply_fail(rep, ST_ERRNO, errno, "userfaultfd: %s", strerror(errno));
		return -1;
	}
	memset(&api.ioctls, 0, sizeof(api.ioctls));
	api.api = UFFD_API;
	api.features = wanted & api.features;
	uffd_features = api.features;
	if (ioctl(fd, UFFDIO_API, &api) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "UFFDIO_API features %#llx: %s",
			   (unsigned long long)uffd_features, strerror(errno));
		close(fd);
		return -1;
	}
	uffd = fd;
	uffd_owner = getpid();
	return uffd;
}

/* UFFD_REGISTER (layout: protocol.h) */
void op_uffd_register(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);
	uint64_t wanted = get_u64(&req->args);
	struct uffdio_register reg;
	int fd;

	if (!args_ok(req, rep))
		return;
	fd = uffd_get(wanted, rep);
	if (fd < 0)
		return;
	memset(&reg, 0, sizeof(reg));
	reg.range.start = addr;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_WP;
	if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "UFFDIO_REGISTER (WP): %s", strerror(errno));
		return;
	}
	put_u64(&rep->payload, uffd_features);
}

/* UFFD_WP (layout: protocol.h) */
void op_uffd_wp(struct request *req, struct reply *rep)
{
	uint64_t addr = get_u64(&req->args), len = get_u64(&req->args);
	uint8_t enable = get_u8(&req->args);
	struct uffdio_writeprotect wp;

	if (!args_ok(req, rep))
		return;
	if (enable > 1) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "uffd_wp: enable %u is not 0 or 1", enable);
		return;
	}
	if (uffd < 0 || uffd_owner != getpid()) {
		reply_fail(rep, ST_ERRNO, ENOENT, "UFFDIO_WRITEPROTECT: this process has no userfaultfd");
		return;
	}
	memset(&wp, 0, sizeof(wp));
	wp.range.start = addr;
	wp.range.len = len;
	wp.mode = enable ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
		reply_fail(rep, ST_ERRNO, errno, "UFFDIO_WRITEPROTECT: %s", strerror(errno));
}
