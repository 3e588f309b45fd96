/*
 * avr_pty: run AVR bootloader firmware in simavr and expose UART0 on a
 * pseudo-terminal, so that host tools can talk to the real firmware.
 *
 *   avr_pty -m atmega328p -f 16000000 -b BOOT.hex [-a APP.hex|APP.bin]
 *           [-d DUMP.bin] [--boot-start ADDR] [--reset-delay MS]
 *           [--park-app] [--no-reset-on-open] [-v]
 *
 * The first line on stdout is the pty slave path.  The log goes to stderr:
 * resets, "application entered" (PC left the boot section), "boot section
 * entered ... from the application" (PC came back without a reset), with -v port
 * closes and overruns, -vv every byte ("rx"/"tx"), -vvv simavr's trace.
 * --park-app halts the core when the application starts (until the next
 * reset), so random test images are never executed.
 *
 * Board model (an Arduino with BOOTRST programmed):
 *  - every reset starts at the bootloader: simavr's reset_pc is set once and
 *    simavr reuses it for watchdog resets too;
 *  - an external reset leaves EXTRF in MCUSR, a watchdog reset WDRF (simavr);
 *  - after any external reset the core is held for --reset-delay ms (default
 *    65, the Uno fuse setting 16K CK + 14 CK + 65 ms); the UART is off then;
 *  - the simulation is throttled to wall-clock time, so watchdog and receive
 *    timeouts in the firmware behave as on hardware;
 *  - a flash page write only clears bits (old AND new), as on hardware, so a
 *    page that was not erased first does not read back as written.
 *
 * Serial line model (8N1 on both sides):
 *  - host bytes reach the AVR one frame time apart at the baud rate the
 *    client set on the pty (tcgetattr on the master sees the slave's
 *    termios); the receiver holds at most 3 bytes (2-byte buffer + shift
 *    register), further bytes are lost as on hardware (data overrun);
 *  - when host and AVR baud rates differ, each frame is re-sampled at the
 *    receiver's bit rate, so a wrong baud rate yields garbage, not data;
 *    a missing stop bit sets FE for the firmware.  Each host byte gives
 *    exactly one AVR byte (a real receiver may see two, or merge two).
 *
 * Reset sources (a pty has no DTR/RTS lines):
 *  - the slave side going from "nobody has it open" to "opened" counts as
 *    the DTR edge that resets an Arduino when its port is opened.  The master
 *    sees POLLHUP while no slave fd is open; we keep none open ourselves;
 *  - SIGUSR1 triggers an external reset at any time.
 * SIGTERM/SIGINT: write the flash to the dump file (if -d) and exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <simavr/avr_flash.h>
#include <simavr/avr_uart.h>
#include <simavr/avr_watchdog.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_hex.h>
#include <simavr/sim_io.h>
#include <simavr/sim_irq.h>

#define MCUSR_ADDR 0x54 /* data address of MCUSR/MCUCSR on the parts we use */
#define EXTRF_BIT 1
#define FRAME_BITS 10   /* start + 8 data + stop */
#define RX_DEPTH 3      /* bytes the AVR receiver can hold before overrun */

/* Log lines carry the wall-clock time since start, in seconds. */
#define LOG(fmt, ...) fprintf(stderr, "avr_pty: [%.3f] " fmt, \
	(now_ns() - t_start) / 1e9, ##__VA_ARGS__)

static uint64_t now_ns(void);
static volatile sig_atomic_t sig_stop, sig_reset;
static uint64_t t_start;
static int verbose;

static avr_t *avr;
static avr_uart_t *uart;
static avr_irq_t *uart_in;
static int master_fd = -1;
static int slave_open;        /* a client holds the slave side open */
static double host_baud;      /* client's termios speed, 0 if unknown */
static int parked;            /* core halted until the next reset */
static int in_app;            /* PC has left the boot section since reset */
static uint64_t hold_until;   /* wall-clock ns until which reset is held */
static uint32_t boot_start;
static int park_app;

/* Host bytes waiting to be "on the wire"; rx_due: cycle the head byte's
 * stop bit ends (0 = not scheduled yet). */
static uint8_t rx_buf[4096];
static size_t rx_len, rx_pos;
static avr_cycle_count_t rx_due;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		sig_reset = 1;
	else
		sig_stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { ns / 1000000000ull, ns % 1000000000ull };
	nanosleep(&ts, NULL); /* EINTR is fine: the loop re-checks the flags */
}

/* Baud rate the firmware programmed into UBRR/U2X (0 if none yet). */
static double avr_baud(void)
{
	uint32_t ubrr = avr_regbit_get(avr, uart->ubrrl)
		| (avr_regbit_get(avr, uart->ubrrh) << 8);
	if (!avr_regbit_get(avr, uart->rxen) && !avr_regbit_get(avr, uart->txen))
		return 0;
	return avr->frequency / ((ubrr + 1) * (avr_regbit_get(avr, uart->u2x) ? 8.0 : 16.0));
}

/* What a receiver running at rx_baud reads from one frame sent at tx_baud:
 * it samples data bit j (1..8) and the stop bit (9) in the middle of its own
 * bit times.  *frame_error is set when the stop bit is not seen. */
static uint8_t resample(uint8_t b, double tx_baud, double rx_baud, int *frame_error)
{
	*frame_error = 0;
	if (tx_baud <= 0 || rx_baud <= 0)
		return b;
	uint8_t out = 0;
	for (int j = 1; j <= 9; j++) {
		int i = (int)((j + 0.5) * tx_baud / rx_baud); /* sender's bit */
		int level = i == 0 ? 0 : i <= 8 ? (b >> (i - 1)) & 1 : 1;
		if (j <= 8)
			out |= level << (j - 1);
		else
			*frame_error = !level;
	}
	return out;
}

static double speed_to_baud(speed_t s)
{
	static const struct { speed_t s; double b; } map[] = {
		{ B1200, 1200 }, { B2400, 2400 }, { B4800, 4800 }, { B9600, 9600 },
		{ B19200, 19200 }, { B38400, 38400 }, { B57600, 57600 },
		{ B115200, 115200 }, { B230400, 230400 }, { B460800, 460800 },
		{ B500000, 500000 }, { B921600, 921600 }, { B1000000, 1000000 },
		{ B2000000, 2000000 },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].s == s)
			return map[i].b;
	return 0;
}

/* Byte sent by the firmware: forward it to the client, if there is one. */
static void uart_out_hook(struct avr_irq_t *irq, uint32_t value, void *param)
{
	(void)irq; (void)param;
	int fe;
	uint8_t b = resample(value, avr_baud(), host_baud, &fe);
	if (verbose > 1)
		LOG("tx %02x\n", b);
	if (slave_open && write(master_fd, &b, 1) != 1 && verbose)
		LOG("tx byte dropped (%s)\n", strerror(errno));
}

/* simavr counts a parity bit that 8N1 does not have: fix the frame time. */
static void fix_uart_timing(void)
{
	double baud = avr_baud();
	if (baud > 0)
		uart->cycles_per_byte = (avr_cycle_count_t)(FRAME_BITS * avr->frequency / baud);
}

/* The head byte's stop bit has ended: hand it to the AVR receiver. */
static void deliver_rx(void)
{
	uint8_t b = rx_buf[rx_pos++];
	double line = host_baud > 0 ? host_baud : avr_baud();
	unsigned held = (uart->input.write - uart->input.read) & (uart_fifo_fifo_size - 1);

	fix_uart_timing();
	if (held >= RX_DEPTH) {
		if (verbose)
			LOG("rx overrun, byte %02x lost\n", b);
	} else {
		int fe;
		uint8_t v = resample(b, line, avr_baud(), &fe);
		if (verbose > 1)
			LOG("rx %02x%s\n", v, fe ? " (framing error)" : "");
		/* FE belongs to the byte at the head of the receive buffer */
		if (!held)
			avr_regbit_setto(avr, uart->fe, fe);
		avr_raise_irq(uart_in, v); /* dropped by simavr if RXEN is off */
	}
	rx_due = rx_pos < rx_len && line > 0
		? rx_due + (avr_cycle_count_t)(FRAME_BITS * avr->frequency / line) : 0;
}

/* simavr 1.6 applies a new watchdog prescaler only at the next WDR, so
 * "set a 16 ms timeout and spin" (optiboot's way to reset) would wait for
 * the old 1 s timeout.  After simavr has handled a WDTCSR write, restart
 * the timer with the new period when the prescaler changed. */
static avr_watchdog_t *wdt;
static int wdt_prescaler;
static void wdt_write_hook(avr_t *a, avr_io_addr_t addr, uint8_t v, void *param)
{
	(void)addr; (void)v; (void)param;
	int wdp = avr_regbit_get_array(a, wdt->wdp, 4);
	if (wdp != wdt_prescaler && avr_regbit_get(a, wdt->wde))
		avr_ioctl(a, AVR_IOCTL_WATCHDOG_RESET, NULL);
	wdt_prescaler = wdp;
}

/* simavr 1.6 copies the temporary page buffer over the flash page on a page
 * write.  Real flash can only clear bits there: a page that was not erased
 * first ends up as old AND new.  Wrap the self-programming module's SPM
 * handler to do that (and say so), since some bootloaders erase a different
 * page than the one they write (the Mega 2560 stk500v2 erase pointer). */
static avr_flash_t *spm_io;
static int (*spm_ioctl)(struct avr_io_t *io, uint32_t ctl, void *param);
static int spm_write_hook(struct avr_io_t *io, uint32_t ctl, void *param)
{
	avr_flash_t *p = spm_io;
	if (ctl != AVR_IOCTL_FLASH_SPM || !avr_regbit_get(avr, p->selfprgen)
	    || avr_regbit_get(avr, p->pgers) || !avr_regbit_get(avr, p->pgwrt)
	    || p->spm_pagesize > 1024)
		return spm_ioctl(io, ctl, param);
	uint32_t z = avr->data[R_ZL] | (avr->data[R_ZH] << 8);
	if (avr->rampz)
		z |= (uint32_t)avr->data[avr->rampz] << 16;
	z &= ~(uint32_t)(p->spm_pagesize - 1);
	if (z + p->spm_pagesize > avr->flashend + 1)
		return spm_ioctl(io, ctl, param);
	uint8_t old[1024];
	memcpy(old, avr->flash + z, p->spm_pagesize);
	int r = spm_ioctl(io, ctl, param);
	int kept = 0;
	for (int i = 0; i < p->spm_pagesize; i++) {
		uint8_t v = avr->flash[z + i] & old[i];
		kept |= v != avr->flash[z + i];
		avr->flash[z + i] = v;
	}
	if (kept)
		LOG("page 0x%05x written over unerased data (bits only clear)\n", z);
	return r;
}

/* Every reset passes here: ours (external) and the watchdog's. */
static void (*core_reset)(avr_t *a);
static int resetting; /* external_reset() is running */
static void on_core_reset(avr_t *a)
{
	if (core_reset)
		core_reset(a);
	if (!resetting)
		LOG("watchdog reset\n");
	in_app = 0;
	wdt_prescaler = 0;
}

/* simavr's idle sleep would block in usleep(); our throttle does that. */
static void no_sleep(avr_t *a, avr_cycle_count_t how_long)
{
	(void)a; (void)how_long;
}

/* Reset with EXTRF set, then hold the core for the start-up delay. */
static void external_reset(uint64_t delay_ns, const char *why)
{
	resetting = 1;
	avr_reset(avr);
	resetting = 0;
	if (avr->reset_flags.extrf.reg)
		avr_regbit_set(avr, avr->reset_flags.extrf);
	else
		avr->data[MCUSR_ADDR] |= 1 << EXTRF_BIT;
	parked = 0;
	hold_until = now_ns() + delay_ns;
	LOG("external reset (%s)\n", why);
}

/* Load an Intel HEX file (or a raw .bin at address 0) into flash. */
static uint32_t load_image(const char *path, uint32_t *lowest)
{
	uint32_t size = avr->flashend + 1, total = 0;
	size_t n = strlen(path);
	*lowest = size;
	if (n > 4 && !strcmp(path + n - 4, ".bin")) {
		FILE *f = fopen(path, "rb");
		if (!f) {
			LOG("%s: %s\n", path, strerror(errno));
			exit(2);
		}
		total = fread(avr->flash, 1, size, f);
		if (fgetc(f) != EOF) {
			LOG("%s: larger than flash (%u bytes)\n", path, size);
			exit(2);
		}
		fclose(f);
		*lowest = 0;
		return total;
	}
	ihex_chunk_p chunks = NULL;
	int count = read_ihex_chunks(path, &chunks);
	if (count <= 0) {
		LOG("%s: cannot read Intel HEX\n", path);
		exit(2);
	}
	for (int i = 0; i < count; i++) {
		uint32_t a = chunks[i].baseaddr, len = chunks[i].size;
		if (a >= size || len > size - a) {
			/* e.g. a bootloader build that is too big for its section */
			LOG("%s: data at 0x%x..0x%x is outside the %u-byte flash\n",
			    path, a, a + len - 1, size);
			exit(2);
		}
		memcpy(avr->flash + a, chunks[i].data, len);
		if (a < *lowest)
			*lowest = a;
		total += len;
	}
	free_ihex_chunks(chunks);
	return total;
}

static void dump_flash(const char *path)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(avr->flash, 1, avr->flashend + 1, f) != avr->flashend + 1
	    || fclose(f) != 0) {
		LOG("%s: cannot write dump: %s\n", path, strerror(errno));
		exit(2);
	}
}

/* Look at the pty: client open/close edges, its baud rate, new bytes. */
static void poll_pty(int reset_on_open, uint64_t delay_ns)
{
	struct pollfd p = { master_fd, POLLIN, 0 };
	if (poll(&p, 1, 0) < 0)
		return;
	int open_now = !(p.revents & POLLHUP);
	if (open_now && !slave_open) {
		slave_open = 1;
		if (reset_on_open)
			external_reset(delay_ns, "port opened");
	} else if (!open_now && slave_open) {
		slave_open = 0;
		if (verbose)
			LOG("port closed\n");
	}
	struct termios tio;
	if (tcgetattr(master_fd, &tio) == 0)
		host_baud = speed_to_baud(cfgetospeed(&tio));
	if ((p.revents & POLLIN) && rx_pos == rx_len) {
		ssize_t r = read(master_fd, rx_buf, sizeof rx_buf);
		rx_pos = 0;
		rx_len = r > 0 ? (size_t)r : 0;
		rx_due = 0;
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: avr_pty -m MCU -f HZ -b BOOT.hex [-a APP.hex|APP.bin] [-d DUMP.bin]\n"
		"               [--boot-start ADDR] [--reset-delay MS] [--park-app]\n"
		"               [--no-reset-on-open] [-v]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	t_start = now_ns();
	const char *mcu = "atmega328p", *boot_hex = NULL, *app = NULL, *dump = NULL;
	unsigned long freq = 16000000;
	long boot_arg = -1;
	double reset_delay_ms = 65.0;
	int reset_on_open = 1;
	static const struct option opts[] = {
		{ "mcu", required_argument, 0, 'm' },
		{ "freq", required_argument, 0, 'f' },
		{ "boot", required_argument, 0, 'b' },
		{ "app", required_argument, 0, 'a' },
		{ "dump", required_argument, 0, 'd' },
		{ "boot-start", required_argument, 0, 's' },
		{ "reset-delay", required_argument, 0, 'r' },
		{ "park-app", no_argument, 0, 'p' },
		{ "no-reset-on-open", no_argument, 0, 'n' },
		{ "verbose", no_argument, 0, 'v' },
		{ 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "m:f:b:a:d:v", opts, NULL)) != -1) {
		switch (c) {
		case 'm': mcu = optarg; break;
		case 'f': freq = strtoul(optarg, NULL, 0); break;
		case 'b': boot_hex = optarg; break;
		case 'a': app = optarg; break;
		case 'd': dump = optarg; break;
		case 's': boot_arg = strtol(optarg, NULL, 0); break;
		case 'r': reset_delay_ms = strtod(optarg, NULL); break;
		case 'p': park_app = 1; break;
		case 'n': reset_on_open = 0; break;
		case 'v': verbose++; break;
		default: usage();
		}
	}
	if (!boot_hex || optind != argc || freq == 0)
		usage();

	avr = avr_make_mcu_by_name(mcu);
	if (!avr) {
		LOG("unknown MCU '%s'\n", mcu);
		return 2;
	}
	avr_init(avr);
	avr->frequency = freq;
	avr->sleep = no_sleep;
	avr->log = verbose > 2 ? LOG_TRACE : LOG_ERROR;
	core_reset = avr->reset;
	avr->reset = on_core_reset;

	uint32_t lowest, n = load_image(boot_hex, &lowest);
	boot_start = boot_arg >= 0 ? (uint32_t)boot_arg : lowest;
	if (app) {
		uint32_t app_low;
		load_image(app, &app_low);
	}
	avr->reset_pc = boot_start; /* BOOTRST: reset vector = boot section */
	LOG("%s @ %lu Hz, bootloader %u bytes, boot start 0x%x\n",
	    mcu, freq, n, boot_start);

	/* UART0: find simavr's port, silence its console echo and its
	 * usleep() on status polls, and hook its byte IRQs. */
	for (avr_io_t *io = avr->io_port; io; io = io->next) {
		if (!strcmp(io->kind, "uart") && ((avr_uart_t *)io)->name == '0')
			uart = (avr_uart_t *)io;
		if (!strcmp(io->kind, "watchdog"))
			wdt = (avr_watchdog_t *)io;
		if (!strcmp(io->kind, "flash")) {
			spm_io = (avr_flash_t *)io;
			spm_ioctl = io->ioctl;
			io->ioctl = spm_write_hook;
		}
	}
	if (wdt)
		avr_register_io_write(avr, wdt->wde.reg, wdt_write_hook, NULL);
	if (!uart) {
		LOG("%s has no UART0\n", mcu);
		return 2;
	}
	uint32_t flags = 0;
	avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
	uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
	avr_irq_register_notify(
		avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
		uart_out_hook, NULL);

	int slave_fd;
	char slave_name[256];
	struct termios tio;
	if (openpty(&master_fd, &slave_fd, slave_name, NULL, NULL) < 0) {
		LOG("openpty: %s\n", strerror(errno));
		return 2;
	}
	tcgetattr(slave_fd, &tio);
	cfmakeraw(&tio);
	tcsetattr(slave_fd, TCSANOW, &tio);
	close(slave_fd); /* from now on POLLHUP on the master = no client */
	fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	printf("%s\n", slave_name);
	fflush(stdout);

	const uint64_t delay_ns = (uint64_t)(reset_delay_ms * 1e6);
	const avr_cycle_count_t slice = freq / 2000; /* 0.5 ms of AVR time */
	external_reset(delay_ns, "start-up");

	uint64_t wall0 = now_ns();
	avr_cycle_count_t cyc0 = avr->cycle;
	while (!sig_stop) {
		if (sig_reset) {
			sig_reset = 0;
			external_reset(delay_ns, "SIGUSR1");
		}
		poll_pty(reset_on_open, delay_ns);

		if (parked || now_ns() < hold_until) {
			rx_pos = rx_len; /* nobody is listening: bytes are lost */
			sleep_ns(500000);
			wall0 = now_ns(); /* restart the time base when we resume */
			cyc0 = avr->cycle;
			continue;
		}
		fix_uart_timing();

		avr_cycle_count_t end = avr->cycle + slice;
		while (avr->cycle < end) {
			if (rx_pos < rx_len) {
				if (!rx_due) { /* line idle: first frame starts now */
					double line = host_baud > 0 ? host_baud : avr_baud();
					rx_due = avr->cycle + (avr_cycle_count_t)
						(FRAME_BITS * avr->frequency / (line > 0 ? line : 115200));
				}
				if (avr->cycle >= rx_due)
					deliver_rx();
			}
			int state = avr_run(avr);
			if (state == cpu_Done || state == cpu_Crashed) {
				LOG("core stopped (%s) at 0x%04x; waiting for a reset\n",
				    state == cpu_Done ? "sleep with interrupts off" : "crash",
				    avr->pc);
				parked = 1;
				break;
			}
			if (avr->pc < boot_start && !in_app) {
				in_app = 1;
				LOG("application entered at 0x%04x%s\n", avr->pc,
				    park_app ? ", parked" : "");
				if (park_app) {
					parked = 1;
					break;
				}
			} else if (avr->pc >= boot_start && in_app) {
				/* without a reset: e.g. erased flash (0xFFFF runs
				 * as a skip instruction) slid up into the boot
				 * section, or the application jumped there */
				in_app = 0;
				LOG("boot section entered at 0x%04x from the application\n",
				    avr->pc);
			}
		}

		/* Throttle: AVR time must not run ahead of wall-clock time. */
		uint64_t sim_ns = (avr->cycle - cyc0) * 1000000000ull / freq;
		uint64_t wall_ns = now_ns() - wall0;
		if (sim_ns > wall_ns)
			sleep_ns(sim_ns - wall_ns);
		else if (wall_ns - sim_ns > 20000000ull) {
			/* more than 20 ms behind (host busy): do not race to catch up */
			wall0 = now_ns();
			cyc0 = avr->cycle;
		}
	}

	if (dump)
		dump_flash(dump);
	LOG("stopped\n");
	return 0;
}
