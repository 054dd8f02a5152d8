/* The DNS hot path in C: FastPath.answer's closure and BatchUdpWorker's loop, the same steps without the
 * interpreter (docs/architecture.md, "The native hot path").
 *
 * Answer(...) is a callable object that answers exactly as the Python closure FastPath._make_answer_py
 * builds: the same tables (read through the same Python objects: _Tables, the ECS shapes, the slot tables,
 * the rate limiter's window), the same bytes, the same counters, and None for every query the closure hands
 * to the slow path. tests/test_dns_native.py checks that reply by reply over random queries and tables.
 * What it cannot do itself it asks the same Python callables the closure calls (answer_general,
 * GeoMap.key, FastPath.source_key, SlotTable.fill, RateLimiter's steps), so the rules live in one place.
 *
 * serve(...) is BatchUdpWorker's loop: recvmmsg a batch (GIL released while waiting), answer each datagram
 * (the Answer object directly; the slow path and the rate limit for its replies through Python), and
 * sendmmsg the replies from their own bytes. With a timings buffer it also times each batch (dnsserver/README.md,
 * Metrics: the wait for the interpreter once the datagrams are in, and datagrams in -> replies sent), from clock
 * reads made while the interpreter is not held, so what the wait for it costs is seen; and each datagram answered,
 * from the kernel's receive stamp (SO_TIMESTAMPNS) to its reply sent, which also holds the time it queued in the
 * socket while the loop was busy or waiting for a core, the part a batch's own clock cannot see.
 *
 * Nothing here trusts the shape of what Python passes beyond what it checks: a wrong type is a TypeError
 * (the loop then asks the slow path), never a crash. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_UDP_PAYLOAD 1232
#define BATCH 64
#define SLOT 65536
#define NAME_SLOT 32

static const unsigned char COUNTS_PLAIN[8] = {0, 1, 0, 0, 0, 0, 0, 0};
static const unsigned char COUNTS_OPT[8] = {0, 1, 0, 0, 0, 0, 0, 1};

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib.crc32(data, value) */
static uint32_t crc32_from(const unsigned char *p, Py_ssize_t n, uint32_t value) {
    uint32_t c = value ^ 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static PyObject *s_folded, *s_entries, *s_geo, *s_subnet, *s_scope, *s_second, *s_buckets, *empty_bytes;
static PyObject *one, *zero;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *cur;        /* [ _Tables ]: install swaps the one item */
    PyObject *shapes;     /* OPT head -> shape (FastPath's make_shapes) */
    PyObject *src;        /* resolver address -> (geo, subnet, scope) */
    PyObject *source_key; /* FastPath.source_key */
    PyObject *gkey;       /* GeoMap.key */
    PyObject *general;    /* answer_general (rate-limited with a limiter) */
    PyObject *scopes;     /* 256 one-byte bytes */
    long default_geo;
    int limited;
    PyObject *rl_cur, *rl_prefix, *rl_count, *rl_limited, *rl_check, *responses;
    unsigned long rl_m4;
    long rl_rps;
} Hot;

static PyTypeObject HotType;

/* A list cell's count plus one: the closure's ``cell[0] += 1``. */
static int bump(PyObject *cell) {
    if (!PyList_Check(cell) || PyList_GET_SIZE(cell) < 1) {
        PyErr_SetString(PyExc_TypeError, "a counter cell is not a list");
        return -1;
    }
    PyObject *old = PyList_GET_ITEM(cell, 0);
    PyObject *nv = PyNumber_Add(old, one);
    if (nv == NULL) return -1;
    PyList_SET_ITEM(cell, 0, nv);
    Py_DECREF(old);
    return 0;
}

static int get_long(PyObject *o, long *out) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/* item i of a tuple, borrowed, with the type and bounds checked */
static PyObject *titem(PyObject *t, Py_ssize_t i) {
    if (!PyTuple_Check(t) || i < 0 || i >= PyTuple_GET_SIZE(t)) {
        PyErr_Format(PyExc_TypeError, "hot path: expected a tuple with item %zd", i);
        return NULL;
    }
    return PyTuple_GET_ITEM(t, i);
}

/* dict.get(key, missing) on a bytes slice, as an int; 1 found, 0 missing, -1 error */
static int dict_get_slice(PyObject *d, const unsigned char *p, Py_ssize_t n, long *out) {
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "hot path: a block table is not a dict");
        return -1;
    }
    PyObject *k = PyBytes_FromStringAndSize((const char *)p, n);
    if (k == NULL) return -1;
    PyObject *v = PyDict_GetItemWithError(d, k);
    Py_DECREF(k);
    if (v == NULL) return PyErr_Occurred() ? -1 : 0;
    return get_long(v, out) < 0 ? -1 : 1;
}

/* item i of an array-like of signed or unsigned ints (bytes, bytearray, array('b'/'h'/'i'/'H')) */
static int index_at(PyObject *arr, Py_ssize_t i, long *out) {
    if (PyByteArray_CheckExact(arr)) {
        if (i < 0 || i >= PyByteArray_GET_SIZE(arr)) goto bounds;
        *out = ((unsigned char *)PyByteArray_AS_STRING(arr))[i];
        return 0;
    }
    if (PyBytes_CheckExact(arr)) {
        if (i < 0 || i >= PyBytes_GET_SIZE(arr)) goto bounds;
        *out = ((unsigned char *)PyBytes_AS_STRING(arr))[i];
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arr, &view, PyBUF_FORMAT | PyBUF_ND) < 0) return -1;
    int rc = 0;
    Py_ssize_t count = view.itemsize > 0 ? view.len / view.itemsize : 0;
    const char *f = view.format ? view.format : "B";
    if (*f == '@' || *f == '=' || *f == '<' || *f == '>' || *f == '!') f++;
    if (i < 0 || i >= count) {
        rc = -2;
    } else if (f[0] == 'b' && view.itemsize == 1) {
        *out = ((signed char *)view.buf)[i];
    } else if (f[0] == 'B' && view.itemsize == 1) {
        *out = ((unsigned char *)view.buf)[i];
    } else if (f[0] == 'h' && view.itemsize == 2) {
        *out = ((int16_t *)view.buf)[i];
    } else if (f[0] == 'H' && view.itemsize == 2) {
        *out = ((uint16_t *)view.buf)[i];
    } else if (f[0] == 'i' && view.itemsize == 4) {
        *out = ((int32_t *)view.buf)[i];
    } else if (f[0] == 'I' && view.itemsize == 4) {
        *out = ((uint32_t *)view.buf)[i];
    } else {
        PyErr_Format(PyExc_TypeError, "hot path: an index of format %s", f);
        rc = -1;
    }
    PyBuffer_Release(&view);
    if (rc == -2) goto bounds;
    return rc;
bounds:
    PyErr_SetString(PyExc_IndexError, "hot path: index out of range");
    return -1;
}

/* x or b"" */
static PyObject *or_empty(PyObject *x) {
    if (x == NULL) return NULL;
    int t = PyObject_IsTrue(x);
    if (t < 0) {
        Py_DECREF(x);
        return NULL;
    }
    if (t) return x;
    Py_DECREF(x);
    return Py_NewRef(empty_bytes);
}

static PyObject *call_key(Hot *h, PyObject *host, PyObject **sub, long *geo) {
    /* src.get(host) or source_key(host): (geo, subnet, scope); sets *sub (new ref) and *geo */
    PyObject *key = PyDict_Check(h->src) ? PyDict_GetItemWithError(h->src, host) : NULL;
    if (key != NULL) {
        Py_INCREF(key);
    } else {
        if (PyErr_Occurred()) return NULL;
        PyObject *fn = Py_NewRef(h->source_key);
        key = PyObject_CallOneArg(fn, host);
        Py_DECREF(fn);
        if (key == NULL) return NULL;
    }
    PyObject *g = titem(key, 0), *s = titem(key, 1);
    if (g == NULL || s == NULL || get_long(g, geo) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    *sub = Py_NewRef(s);
    return key;
}

/* The answer to one query: bytes, None (the slow path), b"" (the rate limit drops it), or NULL (error). */
static PyObject *hot_answer(Hot *h, PyObject *qobj, PyObject *host, int tcp) {
    PyObject *result = NULL, *tables = NULL, *lq = NULL, *tmp = NULL, *sub = NULL, *keyobj = NULL;
    PyObject *entry = NULL;
    const unsigned char *q = (const unsigned char *)PyBytes_AS_STRING(qobj);
    Py_ssize_t n = PyBytes_GET_SIZE(qobj);
    if (n < 12 || (q[2] & 0xF8)) Py_RETURN_NONE;
    int hi;
    if (memcmp(q + 4, COUNTS_PLAIN, 8) == 0) hi = 0;
    else if (memcmp(q + 4, COUNTS_OPT, 8) == 0) hi = 2;
    else Py_RETURN_NONE;
    hi |= (q[2] & 0x01) | (q[3] & 0x10);
    const unsigned char *z = memchr(q + 12, 0, (size_t)(n - 12));
    if (z == NULL) Py_RETURN_NONE;
    Py_ssize_t end = z - q, qe = end + 5;
    if (qe > n) Py_RETURN_NONE;
    Py_ssize_t qlen = qe - 12;

    lq = PyBytes_FromStringAndSize(NULL, qlen);
    if (lq == NULL) return NULL;
    unsigned char *l = (unsigned char *)PyBytes_AS_STRING(lq);
    for (Py_ssize_t i = 0; i < qlen; i++) {
        unsigned char c = q[12 + i];
        l[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
    }
    tables = PyList_Check(h->cur) && PyList_GET_SIZE(h->cur) > 0 ? Py_NewRef(PyList_GET_ITEM(h->cur, 0)) : NULL;
    if (tables == NULL) {
        PyErr_SetString(PyExc_TypeError, "hot path: no tables");
        goto done;
    }
    tmp = PyObject_GetAttr(tables, s_folded);
    if (tmp == NULL || !PyDict_Check(tmp)) goto bad_tables;
    entry = PyDict_GetItemWithError(tmp, lq);
    Py_CLEAR(tmp);
    if (entry == NULL) {
        if (PyErr_Occurred()) goto done;
        /* the name lower-cased, the type and class as sent */
        PyObject *k2 = PyBytes_FromStringAndSize((const char *)q + 12, qlen);
        if (k2 == NULL) goto done;
        unsigned char *p2 = (unsigned char *)PyBytes_AS_STRING(k2);
        memcpy(p2, l, (size_t)(end + 1 - 12));
        tmp = PyObject_GetAttr(tables, s_entries);
        if (tmp == NULL || !PyDict_Check(tmp)) {
            Py_DECREF(k2);
            goto bad_tables;
        }
        entry = PyDict_GetItemWithError(tmp, k2);
        Py_DECREF(k2);
        Py_CLEAR(tmp);
        if (entry == NULL) {
            if (!PyErr_Occurred()) result = Py_NewRef(Py_None);
            goto done;
        }
    }
    Py_INCREF(entry);
    PyObject *seed = titem(entry, 0), *data = titem(entry, 1);
    if (seed == NULL || data == NULL) goto done;
    int steered = seed != Py_None;

    long geo = -1;
    /* the OPT's tail: static echo, or the steered echo with its last (scope) byte maybe replaced */
    const char *echo = NULL;
    Py_ssize_t echo_len = 0;
    int scope_byte = -1;
    const unsigned char *addr = NULL;
    Py_ssize_t addr_len = 0;
    PyObject *shape = NULL;
    int do_bit = 0;
    if (hi & 2) {
        Py_ssize_t a = qe + 6 > n ? n : qe + 6, b = qe + 19 > n ? n : qe + 19;
        tmp = PyBytes_FromStringAndSize((const char *)q + a, b - a);
        if (tmp == NULL) goto done;
        shape = PyDict_Check(h->shapes) ? PyDict_GetItemWithError(h->shapes, tmp) : NULL;
        Py_CLEAR(tmp);
        if (shape == NULL && PyErr_Occurred()) goto done;
        long nb = 0;
        if (shape != NULL) {
            if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) != 13) {
                PyErr_SetString(PyExc_TypeError, "hot path: a shape is not a 13-tuple");
                goto done;
            }
            if (get_long(PyTuple_GET_ITEM(shape, 0), &nb) < 0) goto done;
        }
        if (shape == NULL || n != qe + 19 + nb || memcmp(q + qe, "\x00\x00\x29", 3) != 0) {
            PyObject *args[3] = {qobj, host, tcp ? one : zero};
            result = PyObject_Vectorcall(h->general, args, 3, NULL);
            goto done;
        }
        Py_INCREF(shape);
        PyObject *s_echo = PyTuple_GET_ITEM(shape, 8), *s_steered = PyTuple_GET_ITEM(shape, 9);
        if (!PyBytes_Check(s_echo) || !PyBytes_Check(s_steered) || PyBytes_GET_SIZE(s_steered) < 1) {
            PyErr_SetString(PyExc_TypeError, "hot path: a shape's echo is not bytes");
            goto done_shape;
        }
        do_bit = PyObject_IsTrue(PyTuple_GET_ITEM(shape, 12));
        if (do_bit < 0) goto done_shape;
        echo = PyBytes_AS_STRING(s_echo);
        echo_len = PyBytes_GET_SIZE(s_echo);
        if (nb < 0) {
            if (steered) {
                keyobj = call_key(h, host, &sub, &geo);
                if (keyobj == NULL) goto done_shape;
                echo = PyBytes_AS_STRING(s_steered);
                echo_len = PyBytes_GET_SIZE(s_steered);
            }
        } else {
            long mask;
            if (get_long(PyTuple_GET_ITEM(shape, 1), &mask) < 0) goto done_shape;
            if (mask && (q[n - 1] & mask)) {
                result = Py_NewRef(Py_None);
                goto done_shape;
            }
            addr = q + qe + 19;
            addr_len = n - qe - 19;
            if (steered) {
                PyObject *first = PyTuple_GET_ITEM(shape, 2), *levels = PyTuple_GET_ITEM(shape, 3);
                PyObject *subhead = PyTuple_GET_ITEM(shape, 4), *pad = PyTuple_GET_ITEM(shape, 5);
                PyObject *inner = PyTuple_GET_ITEM(shape, 10), *dense = PyTuple_GET_ITEM(shape, 11);
                if (!PyBytes_Check(subhead) || !PyBytes_Check(pad)) {
                    PyErr_SetString(PyExc_TypeError, "hot path: a shape's subnet parts are not bytes");
                    goto done_shape;
                }
                int decided = 0; /* 1: a level or the dense index decided (subnet from the address) */
                long fallback_scope = -1;
                if (dense == Py_None) {
                    long g = 0;
                    int have_g = 0;
                    geo = -1;
                    int ft = PyObject_IsTrue(first);
                    if (ft < 0) goto done_shape;
                    if (ft) {
                        PyObject *fnb = titem(first, 0), *ftable = titem(first, 1);
                        long lnb;
                        if (fnb == NULL || ftable == NULL || get_long(fnb, &lnb) < 0) goto done_shape;
                        if (lnb > addr_len) lnb = addr_len;
                        int r = dict_get_slice(ftable, addr, lnb < 0 ? 0 : lnb, &geo);
                        if (r < 0) goto done_shape;
                        if (r == 0) geo = h->default_geo;
                        if (geo < 0) {
                            g = -2 - geo;
                            have_g = 1;
                            if (!PyTuple_Check(levels)) {
                                PyErr_SetString(PyExc_TypeError, "hot path: levels are not a tuple");
                                goto done_shape;
                            }
                            for (Py_ssize_t li = 0; li < PyTuple_GET_SIZE(levels); li++) {
                                PyObject *lv = PyTuple_GET_ITEM(levels, li);
                                PyObject *lnbo = titem(lv, 0), *ltab = titem(lv, 1);
                                if (lnbo == NULL || ltab == NULL || get_long(lnbo, &lnb) < 0) goto done_shape;
                                if (lnb > addr_len) lnb = addr_len;
                                r = dict_get_slice(ltab, addr, lnb < 0 ? 0 : lnb, &geo);
                                if (r < 0) goto done_shape;
                                if (r == 0) geo = g;
                                if (geo >= 0) break;
                                g = -2 - geo;
                            }
                        }
                    }
                    if (geo >= 0) {
                        decided = 1;
                    } else if (inner != Py_None && have_g) {
                        PyObject *inb = titem(inner, 0), *itab = titem(inner, 1);
                        long lnb, sc;
                        if (inb == NULL || itab == NULL || get_long(inb, &lnb) < 0) goto done_shape;
                        if (lnb > addr_len) lnb = addr_len;
                        int r = dict_get_slice(itab, addr, lnb < 0 ? 0 : lnb, &sc);
                        if (r < 0) goto done_shape;
                        if (r == 0) {
                            PyErr_SetString(PyExc_KeyError, "hot path: a refined block without its scope");
                            goto done_shape;
                        }
                        geo = g;
                        decided = 1;
                        fallback_scope = sc;
                    }
                } else {
                    PyObject *dnb = titem(dense, 0), *root = titem(dense, 1), *rows = titem(dense, 2);
                    PyObject *ends = titem(dense, 3);
                    long rnb;
                    if (dnb == NULL || root == NULL || rows == NULL || ends == NULL || get_long(dnb, &rnb) < 0)
                        goto done_shape;
                    if (rnb > addr_len) rnb = addr_len;
                    Py_ssize_t ix = 0;
                    for (long k = 0; k < rnb; k++) ix = (ix << 8) | addr[k];
                    long v;
                    if (index_at(root, ix, &v) < 0) goto done_shape;
                    if (v >= 0) {
                        if (!PyTuple_Check(rows)) {
                            PyErr_SetString(PyExc_TypeError, "hot path: dense rows are not a tuple");
                            goto done_shape;
                        }
                        for (Py_ssize_t ri = 0; ri < PyTuple_GET_SIZE(rows); ri++) {
                            PyObject *row = PyTuple_GET_ITEM(rows, ri);
                            PyObject *ato = titem(row, 0), *arr = titem(row, 1);
                            long at;
                            if (ato == NULL || arr == NULL || get_long(ato, &at) < 0) goto done_shape;
                            if (at < 0 || at >= addr_len) {
                                PyErr_SetString(PyExc_IndexError, "hot path: address byte out of range");
                                goto done_shape;
                            }
                            if (index_at(arr, (Py_ssize_t)((v << 8) | addr[at]), &v) < 0) goto done_shape;
                            if (v < 0) break;
                        }
                    }
                    if (v < 0) {
                        geo = ~v;
                        decided = 1;
                    } else if (ends != Py_None) {
                        PyObject *pair = titem(ends, v);
                        if (pair == NULL) goto done_shape;
                        PyObject *pg = titem(pair, 0), *ps = titem(pair, 1);
                        long sc;
                        if (pg == NULL || ps == NULL || get_long(pg, &geo) < 0 || get_long(ps, &sc) < 0)
                            goto done_shape;
                        decided = 1;
                        fallback_scope = sc;
                    }
                }
                PyObject *s_steered_o = s_steered;
                echo = PyBytes_AS_STRING(s_steered_o);
                echo_len = PyBytes_GET_SIZE(s_steered_o);
                if (decided) {
                    Py_ssize_t hl = PyBytes_GET_SIZE(subhead), pl = PyBytes_GET_SIZE(pad);
                    sub = PyBytes_FromStringAndSize(NULL, hl + addr_len + pl);
                    if (sub == NULL) goto done_shape;
                    char *sp = PyBytes_AS_STRING(sub);
                    memcpy(sp, PyBytes_AS_STRING(subhead), (size_t)hl);
                    memcpy(sp + hl, addr, (size_t)addr_len);
                    memcpy(sp + hl + addr_len, PyBytes_AS_STRING(pad), (size_t)pl);
                    if (fallback_scope >= 0) scope_byte = (int)(fallback_scope & 0xFF);
                } else {
                    /* GeoMap.key(family, addr, src) */
                    PyObject *ao = PyBytes_FromStringAndSize((const char *)addr, addr_len);
                    if (ao == NULL) goto done_shape;
                    PyObject *args[3] = {PyTuple_GET_ITEM(shape, 6), ao, PyTuple_GET_ITEM(shape, 7)};
                    PyObject *fn = Py_NewRef(h->gkey);  /* set_geomap may swap it while it runs */
                    keyobj = PyObject_Vectorcall(fn, args, 3, NULL);
                    Py_DECREF(fn);
                    Py_DECREF(ao);
                    if (keyobj == NULL) goto done_shape;
                    PyObject *kg = PyObject_GetAttr(keyobj, s_geo);
                    if (kg == NULL) goto done_shape;
                    int bad = get_long(kg, &geo);
                    Py_DECREF(kg);
                    if (bad < 0) goto done_shape;
                    sub = PyObject_GetAttr(keyobj, s_subnet);
                    if (sub == NULL) goto done_shape;
                    PyObject *ks = PyObject_GetAttr(keyobj, s_scope);
                    if (ks == NULL) goto done_shape;
                    long sc;
                    bad = get_long(ks, &sc);
                    Py_DECREF(ks);
                    if (bad < 0) goto done_shape;
                    if (sc < 0 || sc > 255) {
                        PyErr_SetString(PyExc_IndexError, "hot path: scope out of range");
                        goto done_shape;
                    }
                    scope_byte = (int)sc;
                }
            }
        }
    } else {
        if (qe != n) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (steered) {
            keyobj = call_key(h, host, &sub, &geo);
            if (keyobj == NULL) goto done;
        }
    }

    /* the variant: the entry's own, or the pick's among the geo's split */
    PyObject *variant, *cells = NULL, *fb = NULL;
    long pick = 0;
    if (!steered) {
        variant = data;
    } else {
        PyObject *split = titem(data, geo);
        if (split == NULL) goto done_shape;
        PyObject *index = titem(split, 0), *fill = titem(split, 1), *variants = titem(split, 2);
        cells = titem(split, 3);
        fb = titem(split, 4);
        if (index == NULL || fill == NULL || variants == NULL || cells == NULL || fb == NULL) goto done_shape;
        if (fill != Py_None) {
            if (!PyBytes_Check(sub)) {
                PyErr_SetString(PyExc_TypeError, "hot path: a subnet is not bytes");
                goto done_shape;
            }
            long sd = PyLong_AsUnsignedLongMask(seed);
            if (sd == -1 && PyErr_Occurred()) goto done_shape;
            uint32_t c = crc32_from((const unsigned char *)PyBytes_AS_STRING(sub), PyBytes_GET_SIZE(sub),
                                    (uint32_t)sd);
            long s = (long)(((uint64_t)c * 0x9E3779B1u) & 0xFFFFFFFFu) >> 16;
            if (index_at(index, s, &pick) < 0) goto done_shape;
            if (pick >= 255) {
                PyObject *so = PyLong_FromLong(s);
                if (so == NULL) goto done_shape;
                PyObject *io = PyObject_CallOneArg(fill, so);
                Py_DECREF(so);
                if (io == NULL) goto done_shape;
                int bad = get_long(io, &pick);
                Py_DECREF(io);
                if (bad < 0) goto done_shape;
            }
        }
        variant = titem(variants, pick);
        if (variant == NULL) goto done_shape;
    }
    if ((hi & 2) && do_bit) {
        variant = titem(variant, 4);
        if (variant == NULL) goto done_shape;
    }
    PyObject *heads = titem(variant, 0), *body = titem(variant, 1);
    PyObject *counter = titem(variant, tcp ? 3 : 2);
    if (heads == NULL || body == NULL || counter == NULL) goto done_shape;
    PyObject *head = titem(heads, hi);
    if (head == NULL) goto done_shape;
    if (!PyBytes_Check(head) || !PyBytes_Check(body)) {
        PyErr_SetString(PyExc_TypeError, "hot path: a variant's parts are not bytes");
        goto done_shape;
    }
    Py_ssize_t hl = PyBytes_GET_SIZE(head), bl = PyBytes_GET_SIZE(body);
    Py_ssize_t m = 2 + hl + qlen + bl + ((hi & 2) ? echo_len + addr_len : 0);
    if (hi & 2) {
        if (m > 512) {
            long limit;
            if (tcp) {
                limit = 65535;
            } else {
                limit = (q[qe + 3] << 8) | q[qe + 4];
                limit = limit > MAX_UDP_PAYLOAD ? MAX_UDP_PAYLOAD : limit < 512 ? 512 : limit;
            }
            if (m > limit) {
                result = Py_NewRef(Py_None);
                goto done_shape;
            }
        }
    } else if (m > (tcp ? 65535 : 512)) {
        result = Py_NewRef(Py_None);
        goto done_shape;
    }
    PyObject *resp = PyBytes_FromStringAndSize(NULL, m);
    if (resp == NULL) goto done_shape;
    char *w = PyBytes_AS_STRING(resp);
    memcpy(w, q, 2);
    w += 2;
    memcpy(w, PyBytes_AS_STRING(head), (size_t)hl);
    w += hl;
    memcpy(w, q + 12, (size_t)qlen);
    w += qlen;
    memcpy(w, PyBytes_AS_STRING(body), (size_t)bl);
    w += bl;
    if (hi & 2) {
        memcpy(w, echo, (size_t)echo_len);
        if (scope_byte >= 0) w[echo_len - 1] = (char)scope_byte;
        w += echo_len;
        memcpy(w, addr, (size_t)addr_len);
    }
    if (bump(counter) < 0) goto fail_resp;
    if (steered) {
        PyObject *cell = titem(cells, pick);
        if (cell == NULL || bump(cell) < 0) goto fail_resp;
        if (fb != Py_None && bump(fb) < 0) goto fail_resp;
    }
    if (!h->limited) {
        result = resp;
        goto done_shape;
    }
    {
        /* RateLimiter.check's common case inline, in the window the loop moved to */
        PyObject *win = PyList_Check(h->rl_cur) && PyList_GET_SIZE(h->rl_cur) > 0
                            ? Py_NewRef(PyList_GET_ITEM(h->rl_cur, 0)) : NULL;
        if (win == NULL) {
            PyErr_SetString(PyExc_TypeError, "hot path: no rate-limit window");
            goto fail_resp;
        }
        const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(resp);
        if ((r[3] & 0x0F) || !(r[2] & 0x06)) {
            PyObject *second = PyObject_GetAttr(win, s_second);
            Py_DECREF(win);
            if (second == NULL) goto fail_resp;
            PyObject *args[4] = {qobj, resp, host, second};
            result = or_empty(PyObject_Vectorcall(h->rl_check, args, 4, NULL));
            Py_DECREF(second);
            Py_DECREF(resp);
            goto done_shape;
        }
        PyObject *prefix;
        if (PyLong_CheckExact(host)) {
            unsigned long hv = PyLong_AsUnsignedLongMask(host);
            if (hv == (unsigned long)-1 && PyErr_Occurred()) {
                Py_DECREF(win);
                goto fail_resp;
            }
            prefix = PyLong_FromUnsignedLong(hv & h->rl_m4);
        } else {
            prefix = PyObject_CallOneArg(h->rl_prefix, host);
        }
        if (prefix == NULL) {
            Py_DECREF(win);
            goto fail_resp;
        }
        PyObject *bucket = PyTuple_Pack(2, prefix, lq);
        Py_DECREF(prefix);
        if (bucket == NULL) {
            Py_DECREF(win);
            goto fail_resp;
        }
        PyObject *buckets = PyObject_GetAttr(win, s_buckets);
        if (buckets == NULL || !PyDict_Check(buckets)) {
            if (buckets != NULL) PyErr_SetString(PyExc_TypeError, "hot path: buckets are not a dict");
            Py_XDECREF(buckets);
            Py_DECREF(bucket);
            Py_DECREF(win);
            goto fail_resp;
        }
        PyObject *cell = PyDict_GetItemWithError(buckets, bucket);
        Py_DECREF(buckets);
        if (cell == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(bucket);
                Py_DECREF(win);
                goto fail_resp;
            }
            PyObject *rps = PyLong_FromLong(h->rl_rps);
            if (rps == NULL) {
                Py_DECREF(bucket);
                Py_DECREF(win);
                goto fail_resp;
            }
            PyObject *args[7] = {qobj, resp, host, win, bucket, rps, h->responses};
            result = or_empty(PyObject_Vectorcall(h->rl_count, args, 7, NULL));
            Py_DECREF(rps);
            Py_DECREF(bucket);
            Py_DECREF(win);
            Py_DECREF(resp);
            goto done_shape;
        }
        Py_INCREF(cell);
        Py_DECREF(bucket);
        Py_DECREF(win);
        if (!PyList_Check(cell) || PyList_GET_SIZE(cell) < 1) {
            PyErr_SetString(PyExc_TypeError, "hot path: a bucket is not a list");
            Py_DECREF(cell);
            goto fail_resp;
        }
        long c;
        if (bump(cell) < 0 || get_long(PyList_GET_ITEM(cell, 0), &c) < 0) {
            Py_DECREF(cell);
            goto fail_resp;
        }
        if (c <= h->rl_rps) {
            Py_DECREF(cell);
            result = resp;
            goto done_shape;
        }
        PyObject *over = PyLong_FromLong(c - h->rl_rps);
        if (over == NULL) {
            Py_DECREF(cell);
            goto fail_resp;
        }
        PyObject *args[6] = {qobj, resp, host, over, h->responses, cell};
        result = or_empty(PyObject_Vectorcall(h->rl_limited, args, 6, NULL));
        Py_DECREF(over);
        Py_DECREF(cell);
        Py_DECREF(resp);
        goto done_shape;
    }
fail_resp:
    Py_DECREF(resp);
done_shape:
    Py_XDECREF(shape);
    goto done;
bad_tables:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "hot path: tables without their dicts");
done:
    Py_XDECREF(tmp);
    Py_XDECREF(entry);
    Py_XDECREF(keyobj);
    Py_XDECREF(sub);
    Py_XDECREF(tables);
    Py_XDECREF(lq);
    return result;
}

static PyObject *Hot_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 3 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "answer(query, host, tcp) takes three positional arguments");
        return NULL;
    }
    int tcp = PyObject_IsTrue(args[2]);
    if (tcp < 0) return NULL;
    if (PyBytes_CheckExact(args[0])) return hot_answer((Hot *)self, args[0], args[1], tcp);
    PyObject *qb = PyBytes_FromObject(args[0]);
    if (qb == NULL) return NULL;
    PyObject *r = hot_answer((Hot *)self, qb, args[1], tcp);
    Py_DECREF(qb);
    return r;
}

static int Hot_traverse(Hot *h, visitproc visit, void *arg) {
    Py_VISIT(h->cur);
    Py_VISIT(h->shapes);
    Py_VISIT(h->src);
    Py_VISIT(h->source_key);
    Py_VISIT(h->gkey);
    Py_VISIT(h->general);
    Py_VISIT(h->scopes);
    Py_VISIT(h->rl_cur);
    Py_VISIT(h->rl_prefix);
    Py_VISIT(h->rl_count);
    Py_VISIT(h->rl_limited);
    Py_VISIT(h->rl_check);
    Py_VISIT(h->responses);
    return 0;
}

static int Hot_clear(Hot *h) {
    Py_CLEAR(h->cur);
    Py_CLEAR(h->shapes);
    Py_CLEAR(h->src);
    Py_CLEAR(h->source_key);
    Py_CLEAR(h->gkey);
    Py_CLEAR(h->general);
    Py_CLEAR(h->scopes);
    Py_CLEAR(h->rl_cur);
    Py_CLEAR(h->rl_prefix);
    Py_CLEAR(h->rl_count);
    Py_CLEAR(h->rl_limited);
    Py_CLEAR(h->rl_check);
    Py_CLEAR(h->responses);
    return 0;
}

static void Hot_dealloc(Hot *h) {
    PyObject_GC_UnTrack(h);
    Hot_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static void set_ref(PyObject **slot, PyObject *v) {
    PyObject *old = *slot;
    *slot = Py_NewRef(v);
    Py_XDECREF(old);
}

/* Answer(cur, shapes, src, source_key, gkey, default, general, limiter_hot_or_None, rl_check, responses) */
static int Hot_init(Hot *h, PyObject *args, PyObject *kwds) {
    PyObject *cur, *shapes, *src, *source_key, *gkey, *general, *hot, *rl_check, *responses;
    long default_geo;
    static char *kw[] = {"cur", "shapes", "src", "source_key", "gkey", "default", "general", "limiter_hot",
                         "rl_check", "responses", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!OOlOOOO", kw, &PyList_Type, &cur, &PyDict_Type, &shapes,
                                     &PyDict_Type, &src, &source_key, &gkey, &default_geo, &general, &hot,
                                     &rl_check, &responses))
        return -1;
    set_ref(&h->cur, cur);
    set_ref(&h->shapes, shapes);
    set_ref(&h->src, src);
    set_ref(&h->source_key, source_key);
    set_ref(&h->gkey, gkey);
    set_ref(&h->general, general);
    h->default_geo = default_geo;
    h->limited = hot != Py_None;
    if (h->limited) {
        PyObject *rl_cur, *m4, *prefix, *rps, *count, *limited;
        if (!PyArg_ParseTuple(hot, "O!OOOOO", &PyList_Type, &rl_cur, &m4, &prefix, &rps, &count, &limited))
            return -1;
        unsigned long m = PyLong_AsUnsignedLongMask(m4);
        if (m == (unsigned long)-1 && PyErr_Occurred()) return -1;
        long r = PyLong_AsLong(rps);
        if (r == -1 && PyErr_Occurred()) return -1;
        h->rl_m4 = m;
        h->rl_rps = r;
        set_ref(&h->rl_cur, rl_cur);
        set_ref(&h->rl_prefix, prefix);
        set_ref(&h->rl_count, count);
        set_ref(&h->rl_limited, limited);
        set_ref(&h->rl_check, rl_check);
        set_ref(&h->responses, responses);
    }
    return 0;
}

static PyObject *Hot_set_shapes(Hot *h, PyObject *shapes) {
    if (!PyDict_Check(shapes)) {
        PyErr_SetString(PyExc_TypeError, "set_shapes takes a dict");
        return NULL;
    }
    set_ref(&h->shapes, shapes);
    Py_RETURN_NONE;
}

static PyObject *Hot_set_geomap(Hot *h, PyObject *args) {
    PyObject *gkey, *src, *shapes;
    long default_geo;
    if (!PyArg_ParseTuple(args, "OO!lO!", &gkey, &PyDict_Type, &src, &default_geo, &PyDict_Type, &shapes))
        return NULL;
    /* one step each, under the GIL: a query sees the old map or the new one (the closure's cells swap alike) */
    set_ref(&h->gkey, gkey);
    set_ref(&h->src, src);
    h->default_geo = default_geo;
    set_ref(&h->shapes, shapes);
    Py_RETURN_NONE;
}

static PyMethodDef Hot_methods[] = {
    {"set_shapes", (PyCFunction)Hot_set_shapes, METH_O, "Answer with another table of ECS shapes (stale or not)."},
    {"set_geomap", (PyCFunction)Hot_set_geomap, METH_VARARGS,
     "set_geomap(gkey, src, default, shapes): place clients with another geo map."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Hot_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Hot *h = (Hot *)type->tp_alloc(type, 0);
    if (h != NULL) h->vectorcall = Hot_vectorcall;
    return (PyObject *)h;
}

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dnsserver._hot.Answer",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "answer(query, host, tcp): FastPath's answer closure, in C.",
    .tp_new = Hot_new,
    .tp_init = (initproc)Hot_init,
    .tp_dealloc = (destructor)Hot_dealloc,
    .tp_traverse = (traverseproc)Hot_traverse,
    .tp_clear = (inquiry)Hot_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Hot, vectorcall),
    .tp_methods = Hot_methods,
};

/* ---- the batch loop ---- */

static PyObject *as_reply(PyObject *r) {
    /* None / b"" -> NULL without an error (nothing to send); bytes-like -> exact bytes */
    if (r == NULL || r == Py_None) {
        Py_XDECREF(r);
        return NULL;
    }
    if (!PyBytes_CheckExact(r)) {
        PyObject *b = PyBytes_FromObject(r);
        Py_DECREF(r);
        if (b == NULL) {
            PyErr_WriteUnraisable(NULL);
            return NULL;
        }
        r = b;
    }
    if (PyBytes_GET_SIZE(r) == 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static void send_range(int fd, struct mmsghdr *smsg, int first, int end) {
    while (first < end) {
        /* the interpreter kept: a send to a socket with room does not wait, and to let go of the interpreter
         * here would be to ask for it back behind whatever thread took it. Only a full socket waits. */
        int sent = sendmmsg(fd, smsg + first, (unsigned)(end - first), MSG_DONTWAIT);
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            Py_BEGIN_ALLOW_THREADS
            sent = sendmmsg(fd, smsg + first, (unsigned)(end - first), 0);
            Py_END_ALLOW_THREADS
        }
        /* an error after some messages ends the call early: retry from the one that failed; an error on the
         * first one: skip it (UDP may drop) */
        first += sent > 0 ? sent : 1;
    }
}

/* The UDP loop's latency histograms, in a uint64 buffer the server's Stats owns (metrics.UDP_LATENCY_BOUNDS):
 * per histogram LAT_BUCKETS + 1 counts (the last one past every bound), the sum and the longest, in ns.
 * Histogram 0: a batch's wait for the interpreter after recvmmsg returned; 1: recvmmsg returned -> the
 * batch's replies sent; 2: per datagram answered, the kernel's receive stamp -> the batch's replies sent
 * (both CLOCK_REALTIME, the stamp's clock: a reading that went backwards or is over LAT_STAMP_MAX_NS, a clock
 * step, is left out). Written with the interpreter held, so the loops of several sockets may share one. */
#define LAT_BUCKETS 9
#define LAT_SLOTS (LAT_BUCKETS + 3)
#define LAT_HISTOGRAMS 3
#define LAT_STAMP_MAX_NS 60000000000ull
#define CTRL 64 /* a datagram's control data: one SCM_TIMESTAMPNS (32 bytes with its header) */
static const uint64_t LAT_BOUNDS_NS[LAT_BUCKETS] = {100000, 250000, 500000, 1000000, 2500000,
                                                    5000000, 10000000, 25000000, 100000000};

static uint64_t ts_ns(struct timespec t) { return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec; }

static uint64_t clock_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return ts_ns(t);
}

/* the kernel's receive stamp of message m, in ns of CLOCK_REALTIME; 0 if it has none */
static uint64_t rx_stamp(struct msghdr *m) {
    if (m->msg_flags & MSG_CTRUNC) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec t;
            memcpy(&t, CMSG_DATA(c), sizeof t);
            return ts_ns(t);
        }
    }
    return 0;
}

static void observe(uint64_t *h, uint64_t ns) {
    int b = 0;
    while (b < LAT_BUCKETS && ns > LAT_BOUNDS_NS[b]) b++;
    h[b]++;
    h[LAT_BUCKETS + 1] += ns;
    if (ns > h[LAT_BUCKETS + 2]) h[LAT_BUCKETS + 2] = ns;
}

/* serve(fd, v6, answer, slow, text, tick, limit, stop[, timings]): BatchUdpWorker._serve */
static PyObject *serve(PyObject *mod, PyObject *args) {
    int fd, v6;
    PyObject *answer, *slow, *text, *tick, *limit, *stop, *timings = Py_None;
    if (!PyArg_ParseTuple(args, "ipOOOOOO!|O", &fd, &v6, &answer, &slow, &text, &tick, &limit, &PyList_Type, &stop,
                          &timings))
        return NULL;
    if (PyList_GET_SIZE(stop) < 1) {
        PyErr_SetString(PyExc_ValueError, "stop must be a one-item list");
        return NULL;
    }
    Py_buffer tview = {0};
    uint64_t *lat = NULL;
    if (timings != Py_None) {
        if (PyObject_GetBuffer(timings, &tview, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) return NULL;
        if (tview.itemsize != 8 || tview.len != (Py_ssize_t)(LAT_HISTOGRAMS * LAT_SLOTS * 8) ||
            tview.format == NULL || strcmp(tview.format, "Q") != 0) {
            PyBuffer_Release(&tview);
            PyErr_Format(PyExc_ValueError, "timings must be an array('Q') of %d items", LAT_HISTOGRAMS * LAT_SLOTS);
            return NULL;
        }
        lat = tview.buf;
        /* the kernel stamps each datagram as it arrives; without the option (an old kernel) the per-datagram
         * histogram stays empty and the batches are still timed */
        int on = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    }
    unsigned char *rbuf = PyMem_RawMalloc((size_t)BATCH * SLOT);
    struct mmsghdr *rmsg = PyMem_RawCalloc(BATCH, sizeof(struct mmsghdr));
    struct mmsghdr *smsg = PyMem_RawCalloc(BATCH, sizeof(struct mmsghdr));
    struct iovec *riov = PyMem_RawCalloc(BATCH, sizeof(struct iovec));
    struct iovec *siov = PyMem_RawCalloc(BATCH, sizeof(struct iovec));
    struct sockaddr_in6 *names = PyMem_RawCalloc(BATCH, sizeof(struct sockaddr_in6));
    /* control data, aligned for cmsghdr: only with a timings buffer (the receive stamps) */
    uint64_t *ctrl = lat != NULL ? PyMem_RawCalloc(BATCH, CTRL) : NULL;
    PyObject *keep[BATCH] = {NULL};
    if (!rbuf || !rmsg || !smsg || !riov || !siov || !names || (lat != NULL && !ctrl)) {
        PyMem_RawFree(ctrl);
        PyMem_RawFree(rbuf);
        PyMem_RawFree(rmsg);
        PyMem_RawFree(smsg);
        PyMem_RawFree(riov);
        PyMem_RawFree(siov);
        PyMem_RawFree(names);
        if (lat != NULL) PyBuffer_Release(&tview);
        return PyErr_NoMemory();
    }
    socklen_t namelen = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = rbuf + (size_t)i * SLOT;
        riov[i].iov_len = SLOT;
        rmsg[i].msg_hdr.msg_name = &names[i];
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
        if (ctrl != NULL) rmsg[i].msg_hdr.msg_control = (char *)ctrl + (size_t)i * CTRL;
        smsg[i].msg_hdr.msg_name = &names[i];
        smsg[i].msg_hdr.msg_namelen = namelen;
        smsg[i].msg_hdr.msg_iov = &siov[i];
        smsg[i].msg_hdr.msg_iovlen = 1;
    }
    int native = Py_IS_TYPE(answer, &HotType);
    PyObject *ret = NULL;
    for (;;) {
        int st = PyObject_IsTrue(PyList_GET_ITEM(stop, 0));
        if (st < 0) goto out;
        if (st) break;
        for (int i = 0; i < BATCH; i++) {
            rmsg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
            if (ctrl != NULL) rmsg[i].msg_hdr.msg_controllen = CTRL; /* the kernel sets it to what it wrote */
        }
        int count;
        uint64_t arrived = 0;
        Py_BEGIN_ALLOW_THREADS
        count = recvmmsg(fd, rmsg, BATCH, MSG_WAITFORONE, NULL);
        if (lat != NULL) arrived = clock_ns(CLOCK_MONOTONIC);
        Py_END_ALLOW_THREADS
        if (count <= 0) continue; /* EINTR, ICMP errors, or woken by shutdown: stop is checked above */
        uint64_t held = clock_ns(CLOCK_MONOTONIC); /* the interpreter is ours from here */
        if (lat != NULL) observe(lat, held - arrived);
        PyObject *now = PyLong_FromLong((long)(held / 1000000000u)); /* int(time.monotonic()) */
        if (now == NULL) goto out;
        if (tick != Py_None) {
            PyObject *r = PyObject_CallOneArg(tick, now);
            if (r == NULL) PyErr_WriteUnraisable(tick);
            Py_XDECREF(r);
        }
        int first = 0;
        for (int i = 0; i < count; i++) {
            PyObject *q = PyBytes_FromStringAndSize((const char *)riov[i].iov_base, rmsg[i].msg_len);
            PyObject *host = NULL;
            if (q != NULL) {
                if (v6)
                    host = PyBytes_FromStringAndSize((const char *)&names[i].sin6_addr, 16);
                else  /* the sin_addr as the batch loop's memoryview reads it: native order */
                    host = PyLong_FromUnsignedLong(((struct sockaddr_in *)&names[i])->sin_addr.s_addr);
            }
            PyObject *resp = NULL;
            if (q == NULL || host == NULL) {
                PyErr_Clear();
            } else {
                PyObject *r;
                if (native) {
                    r = hot_answer((Hot *)answer, q, host, 0);
                } else {
                    PyObject *a[3] = {q, host, zero};
                    r = PyObject_Vectorcall(answer, a, 3, NULL);
                }
                if (r == NULL) {
                    PyErr_Clear(); /* a fast path failure: the slow path answers */
                    r = Py_NewRef(Py_None);
                }
                if (r == Py_None) {
                    Py_DECREF(r);
                    PyObject *ht = PyObject_CallOneArg(text, host);
                    if (ht == NULL) {
                        PyErr_WriteUnraisable(text);
                    } else {
                        PyObject *a[3] = {q, ht, zero};
                        r = PyObject_Vectorcall(slow, a, 3, NULL);
                        Py_DECREF(ht);
                        if (r == NULL) PyErr_WriteUnraisable(slow);
                        resp = as_reply(r);
                        if (resp != NULL && limit != Py_None) {
                            PyObject *la[4] = {q, resp, host, now};
                            PyObject *lr = PyObject_Vectorcall(limit, la, 4, NULL);
                            if (lr == NULL) {
                                PyErr_Clear(); /* a limiter bug lets the reply go */
                            } else {
                                Py_DECREF(resp);
                                resp = as_reply(lr);
                            }
                        }
                    }
                } else {
                    resp = as_reply(r);
                }
            }
            Py_XDECREF(q);
            Py_XDECREF(host);
            if (resp == NULL) { /* no reply: send the ones before, go on */
                send_range(fd, smsg, first, i);
                first = i + 1;
                continue;
            }
            keep[i] = resp;
            siov[i].iov_base = PyBytes_AS_STRING(resp);
            siov[i].iov_len = (size_t)PyBytes_GET_SIZE(resp);
        }
        send_range(fd, smsg, first, count);
        if (lat != NULL) {
            observe(lat + LAT_SLOTS, clock_ns(CLOCK_MONOTONIC) - arrived);
            uint64_t sent = clock_ns(CLOCK_REALTIME);
            for (int i = 0; i < count; i++) {
                uint64_t stamp = keep[i] != NULL ? rx_stamp(&rmsg[i].msg_hdr) : 0;
                if (stamp != 0 && sent >= stamp && sent - stamp <= LAT_STAMP_MAX_NS)
                    observe(lat + 2 * LAT_SLOTS, sent - stamp);
            }
        }
        for (int i = 0; i < count; i++) Py_CLEAR(keep[i]);
        Py_DECREF(now);
    }
    ret = Py_NewRef(Py_None);
out:
    for (int i = 0; i < BATCH; i++) Py_CLEAR(keep[i]);
    PyMem_RawFree(rbuf);
    PyMem_RawFree(rmsg);
    PyMem_RawFree(smsg);
    PyMem_RawFree(riov);
    PyMem_RawFree(siov);
    PyMem_RawFree(names);
    PyMem_RawFree(ctrl);
    if (lat != NULL) PyBuffer_Release(&tview);
    return ret;
}

static PyObject *py_crc32(PyObject *mod, PyObject *args) {
    Py_buffer b;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k", &b, &value)) return NULL;
    uint32_t c = crc32_from(b.buf, b.len, (uint32_t)value);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef module_methods[] = {
    {"serve", serve, METH_VARARGS,
     "serve(fd, v6, answer, slow, text, tick, limit, stop[, timings]): the batched UDP loop until stop[0]."},
    {"crc32", py_crc32, METH_VARARGS, "zlib.crc32(data, value), as the pick computes it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnsserver._hot", "The DNS hot path in C (dnsserver/_hot.c).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hot(void) {
    crc_init();
    if (PyType_Ready(&HotType) < 0) return NULL;
    s_folded = PyUnicode_InternFromString("folded");
    s_entries = PyUnicode_InternFromString("entries");
    s_geo = PyUnicode_InternFromString("geo");
    s_subnet = PyUnicode_InternFromString("subnet");
    s_scope = PyUnicode_InternFromString("scope");
    s_second = PyUnicode_InternFromString("second");
    s_buckets = PyUnicode_InternFromString("buckets");
    empty_bytes = PyBytes_FromStringAndSize("", 0);
    one = PyLong_FromLong(1);
    zero = PyLong_FromLong(0);
    if (!s_folded || !s_entries || !s_geo || !s_subnet || !s_scope || !s_second || !s_buckets || !empty_bytes || !one ||
        !zero)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *bounds = PyTuple_New(LAT_BUCKETS);
    if (bounds == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    for (int i = 0; i < LAT_BUCKETS; i++) {
        PyObject *b = PyFloat_FromDouble((double)LAT_BOUNDS_NS[i] / 1e9);
        if (b == NULL) {
            Py_DECREF(bounds);
            Py_DECREF(m);
            return NULL;
        }
        PyTuple_SET_ITEM(bounds, i, b);
    }
    if (PyModule_AddObject(m, "LATENCY_BOUNDS", bounds) < 0) {
        Py_DECREF(bounds);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&HotType);
    if (PyModule_AddObject(m, "Answer", (PyObject *)&HotType) < 0) {
        Py_DECREF(&HotType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
