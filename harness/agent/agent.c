/*
 * Guest agent of the pagemap harness: /init of the test initramfs.
 *
 * Mounts what the tests read (proc, sysfs, devtmpfs, a tmpfs for files),
 * finds the virtio-serial port named "agent", says HELLO and serves
 * requests until the host asks for power-off or hangs up.
 *
 * For development it also runs as an ordinary process:
 *     agent /path/to/unix.sock      (connects and serves that socket)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define PORT_NAME "agent"
#define PORT_CLASS_DIR "/sys/class/virtio-ports"
#define PORT_WAIT_MS 10000
#define TMPFS_MAGIC_VALUE 0x01021994

void agent_log(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "agent[%d]: %s\n", (int)getpid(), msg);
}

static void mount_one(const char *source, const char *target, const char *type)
{
	mkdir(target, 0755);
	if (mount(source, target, type, 0, NULL) != 0 && errno != EBUSY)
		agent_log("mount %s on %s: %s", type, target, strerror(errno));
}

/* /tmp must be a writable tmpfs: the rootfs is one when CONFIG_TMPFS is set. */
static void mount_tmp(void)
{
	struct statfs st;

	mkdir("/tmp", 01777);
	if (statfs("/", &st) == 0 && (unsigned long)st.f_type == TMPFS_MAGIC_VALUE)
		return;
	mount_one("tmpfs", "/tmp", "tmpfs");
}

static void setup_mounts(void)
{
	mount_one("proc", "/proc", "proc");
	mount_one("sysfs", "/sys", "sysfs");
	mount_one("devtmpfs", "/dev", "devtmpfs");
	mount_tmp();
	/* The selftests' gup_test and split_huge_pages files (CONFIG_DEBUG_FS); a kernel
	 * without it says ENODEV, which is no error here. */
	mkdir("/sys/kernel/debug", 0755);
	if (mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL) != 0 && errno != EBUSY &&
	    errno != ENODEV)
		agent_log("mount debugfs on /sys/kernel/debug: %s", strerror(errno));
}

/* The port's device name (e.g. "vport1p1") if its name file says PORT_NAME. */
static int port_named_agent(const char *entry)
{
	char path[300], name[64] = "";
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), PORT_CLASS_DIR "/%s/name", entry);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, name, sizeof(name) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	name[n] = 0;
	name[strcspn(name, "\n")] = 0;
	return strcmp(name, PORT_NAME) == 0;
}

static int find_port_once(void)
{
	DIR *dir = opendir(PORT_CLASS_DIR);
	struct dirent *e;
	char dev[300];
	int fd = -1;

	if (!dir)
		return -1;
	while (fd < 0 && (e = readdir(dir)) != NULL) {
		if (e->d_name[0] == '.' || !port_named_agent(e->d_name))
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", e->d_name);
		fd = open(dev, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			agent_log("open %s: %s", dev, strerror(errno));
	}
	closedir(dir);
	return fd;
}

/* Ports appear when the host side is probed: wait for ours a while. */
static int open_agent_port(void)
{
	struct timespec step = { 0, 10 * 1000000L };
	int waited, fd;

	for (waited = 0; waited < PORT_WAIT_MS; waited += 10) {
		fd = find_port_once();
		if (fd >= 0)
			return fd;
		nanosleep(&step, NULL);
	}
	agent_log("no virtio port named '%s' under %s after %d ms", PORT_NAME,
		  PORT_CLASS_DIR, PORT_WAIT_MS);
	return -1;
}

static int connect_unix(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || strlen(path) >= sizeof(addr.sun_path))
		return -1;
	strcpy(addr.sun_path, path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		agent_log("connect %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

void power_off(void)
{
	sync();
	if (getpid() == 1) {
		/*
		 * A reset, not a power-off: QEMU runs every guest with -no-reboot,
		 * so a reset ends it on every machine, and a reset needs no
		 * firmware power-off path (the PC's is ACPI S5, which the x86
		 * kernels do not build; without it RB_POWER_OFF only halts).
		 */
		agent_log("powering off (reset; QEMU has -no-reboot)");
		reboot(RB_AUTOBOOT);
		agent_log("reboot(RB_AUTOBOOT): %s", strerror(errno));
		for (;;)
			pause();
	}
	exit(0);
}

static int send_hello(int port)
{
	struct frame hello = { .seq = 0, .op = OP_HELLO, .status = ST_OK };
	int ret;

	buf_init(&hello.payload);
	put_hello(&hello.payload);
	ret = frame_write(port, RESPONSE_MAGIC, &hello);
	buf_free(&hello.payload);
	return ret;
}

int main(int argc, char **argv)
{
	int port;

	signal(SIGPIPE, SIG_IGN);
	if (getpid() == 1) {
		setup_mounts();
		port = open_agent_port();
	} else if (argc == 2) {
		port = connect_unix(argv[1]);
	} else {
		fprintf(stderr, "usage: %s UNIX-SOCKET (when not run as init)\n", argv[0]);
		return 2;
	}
	if (port < 0 || send_hello(port) != 0) {
		agent_log("no channel to the host");
		power_off();
	}
	agent_log("ready (protocol %u)", AGENT_PROTOCOL_VERSION);
	serve_port(port);
	power_off();
}
