/*
 * SWAPON, SWAPOFF: swapon(2) / swapoff(2) of a block device (the swap disk
 * the harness gives a VM with swap: /dev/vda, virtio-blk, whose swap header
 * the host wrote, so the guest needs no mkswap).  The reply is OK or the
 * system call's errno.  The build's libc has <sys/swap.h>; the system calls
 * are taken directly so that nothing depends on its wrappers' presence.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

#define SWAP_PATH_MAX 256

void op_swapon(struct request *req, struct reply *rep)
{
	char path[SWAP_PATH_MAX];
	uint32_t flags;

	get_cstr(&req->args, path, sizeof(path), 0);
	flags = get_u32(&req->args);
	if (!args_ok(req, rep))
		return;
	if (syscall(SYS_swapon, path, (int)flags) != 0)
		reply_fail(rep, ST_ERRNO, errno, "swapon %s: %s", path, strerror(errno));
}

void op_swapoff(struct request *req, struct reply *rep)
{
	char path[SWAP_PATH_MAX];

	get_cstr(&req->args, path, sizeof(path), 0);
	if (!args_ok(req, rep))
		return;
	if (syscall(SYS_swapoff, path) != 0)
		reply_fail(rep, ST_ERRNO, errno, "swapoff %s: %s", path, strerror(errno));
}
