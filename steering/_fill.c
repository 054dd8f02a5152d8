/* The rounds of a water-filling in C: steering.fillrounds.rounds_py, the same float operations in the same
 * order, so the result is equal bit for bit (tests/test_fillrounds.py checks it over random inputs).
 *
 * rounds(order, cands, left, room, floor, old=None) -> alloc
 *   order  the geos that have candidates, in demand order (a tuple or list)
 *   cands  geo -> its targets in preference order (a mapping of sequences)
 *   left   geo -> demand still to place (a dict; updated in place, as the Python rounds do)
 *   room   target -> room left (a dict with the usable targets only; updated in place)
 *   floor  below it, demand and room count as none
 *   old    geo -> a previous allocation: where the new one is equal, that very dict is handed back
 * alloc: geo -> {target: requests/s} for every geo of ``order``, its targets in the order they first gave.
 *
 * Round k: every geo still asking (demand left above the floor, a k-th candidate) asks its k-th target; a target
 * with room splits it among the geos asking it in proportion to what they ask. Targets are looked up once per
 * call (a dict from target to slot), geos asking one target in a round are chained in demand order. Nothing
 * trusts the shape of what Python passes beyond what it checks: a wrong type is a TypeError, never a crash. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

typedef struct {
    PyObject *key;      /* borrowed from order */
    PyObject *seq;      /* PySequence_Fast of its candidates: owned */
    PyObject **items;   /* borrowed from seq */
    Py_ssize_t n;
    double left, left0;
    Py_ssize_t base;    /* its entries in the shared arrays: base .. base + count */
    Py_ssize_t count;
    Py_ssize_t next;    /* the next geo asking the same target this round, or -1 */
} Geo;

typedef struct {
    PyObject *key;      /* borrowed from a candidates sequence */
    double room;
    int changed;
    Py_ssize_t stamp;   /* the round it was last asked in */
    Py_ssize_t head, tail, asked;
} Slot;

/* A geo takes ``share`` of slot ``s``: added to its entry for the slot as mine.get(t, 0.0) + share (a new entry
 * at the end of its run, in first-given order), and taken off what it has left. */
static inline void take_share(Geo *g, Py_ssize_t s, double share, Py_ssize_t *ent_slot, double *ent_val) {
    Py_ssize_t e = g->base, end = g->base + g->count;
    while (e < end && ent_slot[e] != s) e++;
    if (e == end) {
        ent_slot[e] = s;
        ent_val[e] = 0.0 + share;
        g->count++;
    } else {
        ent_val[e] = ent_val[e] + share;
    }
    g->left = g->left - share;
}

static PyObject *rounds(PyObject *self, PyObject *args) {
    PyObject *order, *cands, *left, *room, *old = Py_None;
    double floor_;
    if (!PyArg_ParseTuple(args, "OOO!O!d|O:rounds", &order, &cands, &PyDict_Type, &left,
                          &PyDict_Type, &room, &floor_, &old))
        return NULL;
    if (old != Py_None && !PyDict_Check(old)) {
        PyErr_SetString(PyExc_TypeError, "rounds: old must be a dict or None");
        return NULL;
    }
    if (!isfinite(floor_)) {
        PyErr_SetString(PyExc_ValueError, "rounds: floor must be finite");
        return NULL;
    }
    PyObject *ord = PySequence_Fast(order, "rounds: order must be a sequence");
    if (ord == NULL) return NULL;
    Py_ssize_t ng = PySequence_Fast_GET_SIZE(ord);
    PyObject **gkeys = PySequence_Fast_ITEMS(ord);

    PyObject *result = NULL, *slots = NULL;
    Geo *geos = PyMem_Calloc(ng ? ng : 1, sizeof(Geo));
    Py_ssize_t *active = PyMem_Malloc((ng ? ng : 1) * sizeof(Py_ssize_t));
    Py_ssize_t *ent_slot = NULL;
    double *ent_val = NULL;
    Slot *sl = NULL;
    Py_ssize_t *touched = NULL;
    Py_ssize_t nslots = 0, total = 0;
    if (geos == NULL || active == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < ng; i++) {
        Geo *g = &geos[i];
        g->key = gkeys[i];
        g->next = -1;
        PyObject *c = PyObject_GetItem(cands, g->key);  /* any mapping (a dict in the planner) */
        if (c == NULL) goto done;
        g->seq = PySequence_Fast(c, "rounds: a geo's candidates must be a sequence");
        Py_DECREF(c);
        if (g->seq == NULL) goto done;
        g->items = PySequence_Fast_ITEMS(g->seq);
        g->n = PySequence_Fast_GET_SIZE(g->seq);
        PyObject *l = PyDict_GetItemWithError(left, g->key);
        if (l == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, g->key);
            goto done;
        }
        g->left = g->left0 = PyFloat_AsDouble(l);
        if (g->left == -1.0 && PyErr_Occurred()) goto done;
        g->base = total;
        total += g->n;
        active[i] = i;
    }
    /* At most one slot per candidate entry and one entry (target, requests/s) per candidate entry. */
    sl = PyMem_Malloc((total ? total : 1) * sizeof(Slot));
    touched = PyMem_Malloc((total ? total : 1) * sizeof(Py_ssize_t));
    ent_slot = PyMem_Malloc((total ? total : 1) * sizeof(Py_ssize_t));
    ent_val = PyMem_Malloc((total ? total : 1) * sizeof(double));
    slots = PyDict_New();
    if (sl == NULL || touched == NULL || ent_slot == NULL || ent_val == NULL || slots == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }

    Py_ssize_t nactive = ng;
    for (Py_ssize_t k = 0; nactive > 0; k++) {
        Py_ssize_t still = 0, ntouched = 0;
        for (Py_ssize_t a = 0; a < nactive; a++) {
            Py_ssize_t gi = active[a];
            Geo *g = &geos[gi];
            if (!(k < g->n && g->left > floor_)) continue;  /* out of demand or of candidates: out for good */
            active[still++] = gi;
            PyObject *t = g->items[k];
            PyObject *idx = PyDict_GetItemWithError(slots, t);
            Py_ssize_t s;
            if (idx == NULL) {
                if (PyErr_Occurred()) goto done;
                s = nslots++;
                PyObject *num = PyLong_FromSsize_t(s);
                if (num == NULL) goto done;
                int rc = PyDict_SetItem(slots, t, num);
                Py_DECREF(num);
                if (rc < 0) goto done;
                Slot *x = &sl[s];
                x->key = t;
                x->changed = 0;
                x->stamp = -1;
                PyObject *r = PyDict_GetItemWithError(room, t);
                if (r == NULL) {
                    if (PyErr_Occurred()) goto done;
                    x->room = 0.0;  /* not usable */
                } else {
                    x->room = PyFloat_AsDouble(r);
                    if (x->room == -1.0 && PyErr_Occurred()) goto done;
                }
            } else {
                s = PyLong_AsSsize_t(idx);
            }
            Slot *x = &sl[s];
            g->next = -1;
            if (x->stamp != k) {
                x->stamp = k;
                x->head = x->tail = gi;
                x->asked = 1;
                touched[ntouched++] = s;
            } else {
                geos[x->tail].next = gi;
                x->tail = gi;
                x->asked++;
            }
        }
        nactive = still;
        /* Each geo asks one target per round and each target's room is its own: any order of targets gives
         * the same result. */
        for (Py_ssize_t j = 0; j < ntouched; j++) {
            Py_ssize_t s = touched[j];
            Slot *x = &sl[s];
            double r = x->room;
            if (!(r > 0)) continue;
            double give;
            if (x->asked == 1) {
                Geo *g = &geos[x->head];
                double w = g->left;
                give = w < r ? w : r;
                take_share(g, s, give * w / w, ent_slot, ent_val);
            } else {
                double wanted = 0.0;
                for (Py_ssize_t gi = x->head; gi >= 0; gi = geos[gi].next) wanted += geos[gi].left;
                give = wanted < r ? wanted : r;
                for (Py_ssize_t gi = x->head; gi >= 0; gi = geos[gi].next) {
                    Geo *g = &geos[gi];
                    take_share(g, s, give * g->left / wanted, ent_slot, ent_val);
                }
            }
            r = r - give;
            x->room = r < floor_ ? 0.0 : r;
            x->changed = 1;
        }
    }

    result = PyDict_New();
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < ng; i++) {
        Geo *g = &geos[i];
        PyObject *mine = NULL;
        if (old != Py_None) {
            PyObject *was = PyDict_GetItemWithError(old, g->key);
            if (was == NULL && PyErr_Occurred()) goto fail;
            if (was != NULL && PyDict_CheckExact(was) && PyDict_GET_SIZE(was) == g->count) {
                int same = 1;
                for (Py_ssize_t e = g->base; same && e < g->base + g->count; e++) {
                    PyObject *v = PyDict_GetItemWithError(was, sl[ent_slot[e]].key);
                    if (v == NULL) {
                        if (PyErr_Occurred()) goto fail;
                        same = 0;
                    } else if (!PyFloat_CheckExact(v) || PyFloat_AS_DOUBLE(v) != ent_val[e]) {
                        same = 0;
                    }
                }
                if (same) {
                    mine = was;
                    Py_INCREF(mine);
                }
            }
        }
        if (mine == NULL) {
            mine = PyDict_New();
            if (mine == NULL) goto fail;
            for (Py_ssize_t e = g->base; e < g->base + g->count; e++) {
                PyObject *v = PyFloat_FromDouble(ent_val[e]);
                if (v == NULL || PyDict_SetItem(mine, sl[ent_slot[e]].key, v) < 0) {
                    Py_XDECREF(v);
                    Py_DECREF(mine);
                    goto fail;
                }
                Py_DECREF(v);
            }
        }
        int rc = PyDict_SetItem(result, g->key, mine);
        Py_DECREF(mine);
        if (rc < 0) goto fail;
    }
    /* What is left, written back only where it moved (the same values the Python rounds leave). */
    for (Py_ssize_t i = 0; i < ng; i++) {
        Geo *g = &geos[i];
        if (g->left == g->left0) continue;
        PyObject *v = PyFloat_FromDouble(g->left);
        if (v == NULL || PyDict_SetItem(left, g->key, v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    for (Py_ssize_t s = 0; s < nslots; s++) {
        if (!sl[s].changed) continue;
        PyObject *v = PyFloat_FromDouble(sl[s].room);
        if (v == NULL || PyDict_SetItem(room, sl[s].key, v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    if (geos != NULL)
        for (Py_ssize_t i = 0; i < ng; i++) Py_XDECREF(geos[i].seq);
    PyMem_Free(geos);
    PyMem_Free(active);
    PyMem_Free(sl);
    PyMem_Free(touched);
    PyMem_Free(ent_slot);
    PyMem_Free(ent_val);
    Py_XDECREF(slots);
    Py_DECREF(ord);
    return result;
}

/* apportion(values, total, order) -> dict | None: steering.weights.apportion_values_py for n >= 2, the same
 * double operations in the same order (its sum is Python 3.11's: one double added after another), so the result
 * is equal, keys in order, values ints. None where it does not take the case and the Python function must
 * (what it would raise, it raises there): a value that is neither a float nor a small int, a value or an
 * intermediate that is not finite, a total outside 0..2**31, lengths that differ, an order with a key twice
 * (the Python function counts such keys once), or a Python whose sum() adds floats otherwise (3.12 and later
 * compensate). */
#define APPORTION_INTS (1LL << 21) /* |int value| at most this: value * total stays exact in a double */

typedef struct {
    double neg;
    Py_ssize_t i;
} Rank;

static int rank_cmp(const void *a, const void *b) {
    const Rank *x = a, *y = b;
    if (x->neg < y->neg) return -1;
    if (y->neg < x->neg) return 1;
    return x->i < y->i ? -1 : x->i > y->i; /* ties by position: Python's sort is stable */
}

static PyObject *apportion(PyObject *mod, PyObject *args) {
    PyObject *values, *order, *total_obj;
    if (!PyArg_ParseTuple(args, "OOO:apportion", &values, &total_obj, &order)) return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    Py_RETURN_NONE;
#else
    if (!PyList_Check(values) || !PyLong_Check(total_obj)) Py_RETURN_NONE;
    int overflow = 0;
    long long total = PyLong_AsLongLongAndOverflow(total_obj, &overflow);
    if (total == -1 && PyErr_Occurred()) return NULL;
    if (overflow || total < 0 || total > (1LL << 31)) Py_RETURN_NONE;
    PyObject *ord = PySequence_Fast(order, "apportion: order must be a sequence");
    if (ord == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ord);
    if (n < 2 || PyList_GET_SIZE(values) != n) {
        Py_DECREF(ord);
        Py_RETURN_NONE;
    }
    PyObject *result = NULL;
    double *v = PyMem_Malloc((size_t)n * sizeof(double));
    long long *out = PyMem_Malloc((size_t)n * sizeof(long long));
    Rank *rank = NULL;
    if (v == NULL || out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyList_GET_ITEM(values, i);
        if (PyFloat_CheckExact(x)) {
            v[i] = PyFloat_AS_DOUBLE(x);
            if (!isfinite(v[i])) goto decline;
        } else if (PyLong_CheckExact(x)) {
            long long k = PyLong_AsLongLongAndOverflow(x, &overflow);
            if (k == -1 && PyErr_Occurred()) goto done;
            if (overflow || k > APPORTION_INTS || k < -APPORTION_INTS) goto decline;
            v[i] = (double)k;
        } else {
            goto decline;
        }
    }
    /* if min(vals) < 0.0: each max(0.0, v) */
    double lo = v[0];
    for (Py_ssize_t i = 1; i < n; i++)
        if (v[i] < lo) lo = v[i];
    if (lo < 0.0)
        for (Py_ssize_t i = 0; i < n; i++) v[i] = v[i] > 0.0 ? v[i] : 0.0;
    double s = 0.0;
    Py_ssize_t zeros = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        s += v[i];
        zeros += v[i] == 0.0;
    }
    if (!isfinite(s)) goto decline;
    if (zeros == n - 1 && s > 0) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = v[i] != 0.0 ? total : 0;
    } else if (s <= 0) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] = i == 0 ? total : 0;
    } else {
        rank = PyMem_Malloc((size_t)n * sizeof(Rank));
        if (rank == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        double t = (double)total;
        long long floors = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            double e = v[i] * t / s;
            if (!isfinite(e) || e > 9.0e15) goto decline;
            double f = floor(e);
            out[i] = (long long)f;
            floors += out[i];
            rank[i].neg = f - e; /* o - e with o = floor(e) an int: float(o) is f exactly */
            rank[i].i = i;
        }
        long long shortfall = total - floors;
        if (shortfall) {
            /* sorted(range(n), key=neg)[:short]: a negative short drops that many from the end */
            long long k = shortfall > 0 ? (shortfall < n ? shortfall : n) : (n + shortfall > 0 ? n + shortfall : 0);
            qsort(rank, (size_t)n, sizeof(Rank), rank_cmp);
            for (long long j = 0; j < k; j++) out[rank[j].i] += 1;
        }
    }
    result = PyDict_New();
    if (result == NULL) goto done;
    PyObject **keys = PySequence_Fast_ITEMS(ord);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *w = PyLong_FromLongLong(out[i]);
        if (w == NULL || PyDict_SetItem(result, keys[i], w) < 0) {
            Py_XDECREF(w);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(w);
    }
    if (PyDict_GET_SIZE(result) != n) { /* a key twice */
        Py_CLEAR(result);
        goto decline;
    }
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(v);
    PyMem_Free(out);
    PyMem_Free(rank);
    Py_DECREF(ord);
    return result;
#endif
}

static PyMethodDef module_methods[] = {
    {"rounds", rounds, METH_VARARGS, "The rounds of a water-filling (steering.fillrounds.rounds_py, in C)."},
    {"apportion", apportion, METH_VARARGS,
     "steering.weights.apportion_values_py in C for two keys or more; None where it leaves the case to it."},
    {NULL, NULL, 0, NULL},
};


static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "steering._fill", "The rounds of a water-filling and the apportionment of weights in C (steering/_fill.c).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fill(void) { return PyModule_Create(&module); }
