// duckstore's PostgreSQL protocol read by pgJDBC, compared with what pgJDBC
// reads from the source PostgreSQL. Environment as drivers.py's (DS_PG,
// DS_SRC, DS_SERVER_PID). Prints one "ok ..." line per check and "done";
// exits 1 on the first failure, saying what differed.
import java.nio.file.Files;
import java.nio.file.Paths;
import java.sql.*;
import java.util.*;

public class Drivers {
    static final String[] COLUMNS = {"i2", "i4", "i8", "f4", "f8", "num", "t", "vc", "b", "d", "ts", "tstz", "tm",
                                     "iv", "u", "j", "jb", "bt", "ai", "ta"};

    static void fail(String msg) {
        System.out.println("FAIL " + msg);
        System.exit(1);
    }

    static void ok(String msg) {
        System.out.println("ok " + msg);
    }

    static Map<String, String> conninfo(String s) {
        Map<String, String> kv = new HashMap<>();
        for (String part : s.trim().split("\\s+")) {
            int eq = part.indexOf('=');
            kv.put(part.substring(0, eq), part.substring(eq + 1));
        }
        return kv;
    }

    static Connection connect(String env, String extra) throws SQLException {
        Map<String, String> kv = conninfo(System.getenv(env));
        String url = "jdbc:postgresql://" + kv.get("host") + ":" + kv.get("port") + "/"
                     + kv.getOrDefault("dbname", "postgres") + extra;
        return DriverManager.getConnection(url, kv.get("user"), kv.get("password"));
    }

    /* A value as text that compares what the driver decoded: arrays and
     * bytes by content, everything else by its Java type and toString. */
    static String show(Object v) throws SQLException {
        if (v == null)
            return "null";
        if (v instanceof java.sql.Array)
            return "array " + Arrays.deepToString((Object[]) ((java.sql.Array) v).getArray());
        if (v instanceof byte[])
            return "bytes " + Arrays.toString((byte[]) v);
        return v.getClass().getSimpleName() + " " + v;
    }

    static List<String> rows(Connection c, String table) throws SQLException {
        List<String> out = new ArrayList<>();
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT id, " + String.join(", ", COLUMNS) + " FROM " + table
                                            + " ORDER BY id")) {
            while (rs.next())
                for (int i = 0; i <= COLUMNS.length; i++)
                    out.add("row " + rs.getInt(1) + " " + (i == 0 ? "id" : COLUMNS[i - 1]) + ": "
                            + show(rs.getObject(i + 1)));
        }
        return out;
    }

    static List<String> columns(Connection c, String table) throws SQLException {
        List<String> out = new ArrayList<>();
        try (ResultSet r = c.getMetaData().getColumns(null, null, table, "%")) {
            while (r.next()) {
                String type = r.getString("TYPE_NAME");
                // DuckDB has one string type and one JSON type.
                if (type.equals("varchar"))
                    type = "text";
                if (type.equals("jsonb"))
                    type = "json";
                out.add(r.getString("COLUMN_NAME") + " " + type + " "
                        + (type.equals("text") ? "" : r.getInt("COLUMN_SIZE") + "," + r.getInt("DECIMAL_DIGITS")));
            }
        }
        return out;
    }

    static double rssMb(String pid) throws Exception {
        for (String line : Files.readAllLines(Paths.get("/proc/" + pid + "/status")))
            if (line.startsWith("VmRSS:"))
                return Long.parseLong(line.split("\\s+")[1]) / 1024.0;
        return 0;
    }

    public static void main(String[] args) throws Exception {
        try (Connection src = connect("DS_SRC", ""); Connection ds = connect("DS_PG", "")) {
            ok("jdbc: SCRAM, " + ds.getMetaData().getDatabaseProductName() + " "
               + ds.getMetaData().getDatabaseProductVersion());
            List<String> tables = new ArrayList<>();
            try (ResultSet r = ds.getMetaData().getTables(null, null, "%", new String[] {"TABLE"})) {
                while (r.next())
                    tables.add(r.getString("TABLE_SCHEM") + "." + r.getString("TABLE_NAME"));
            }
            if (!tables.equals(List.of("main.big_data", "main.types_data")))
                fail("jdbc: getTables gave " + tables);
            ok("jdbc: getTables " + tables);
            List<String> want = columns(src, "types"), got = columns(ds, "types_data");
            if (!want.equals(got))
                fail("jdbc: getColumns gave " + got + ", PostgreSQL " + want);
            ok("jdbc: getColumns as PostgreSQL's: " + got);

            want = rows(src, "types");
            got = rows(ds, "types_data");
            for (int i = 0; i < Math.max(want.size(), got.size()); i++) {
                String w = i < want.size() ? want.get(i) : "(none)", g = i < got.size() ? got.get(i) : "(none)";
                // The JSON types' and varchar's differences are the OIDs', not the values'.
                if (!w.equals(g) && !(w.replace("PGobject", "String").equals(g)))
                    fail("jdbc: PostgreSQL " + w + ", duckstore " + g);
            }
            ok("jdbc: " + got.size() / (COLUMNS.length + 1) + " rows x " + COLUMNS.length
               + " types equal to PostgreSQL's");

            try (PreparedStatement p = ds.prepareStatement("SELECT i8, t FROM types_data WHERE id = ? AND t = ?")) {
                p.setInt(1, 1);
                p.setString(2, "héllo \"q\"");
                try (ResultSet r = p.executeQuery()) {
                    if (!r.next() || r.getLong(1) != 9007199254740993L || r.next())
                        fail("jdbc: parameterized query");
                }
            }
            ok("jdbc: parameterized query");

            try (Statement st = ds.createStatement()) {
                st.executeUpdate("UPDATE types_data SET i4 = 0");
                fail("jdbc: the UPDATE was accepted");
            } catch (SQLException e) {
                if (!"25006".equals(e.getSQLState()))
                    fail("jdbc: the UPDATE failed with " + e.getSQLState() + " " + e.getMessage());
                ok("jdbc: write refused, " + e.getSQLState());
            }

            Statement longQuery = ds.createStatement();
            SQLException[] error = new SQLException[1];
            Thread t = new Thread(() -> {
                try {
                    longQuery.executeQuery("SELECT count(*) FROM big_data a, big_data b WHERE a.id + b.id < 0");
                } catch (SQLException e) {
                    error[0] = e;
                }
            });
            t.start();
            long deadline = System.currentTimeMillis() + 60000;
            while (t.isAlive() && System.currentTimeMillis() < deadline) {
                Thread.sleep(200);
                longQuery.cancel();
            }
            t.join(60000);
            if (t.isAlive() || error[0] == null || !"57014".equals(error[0].getSQLState()))
                fail("jdbc: cancel: " + (t.isAlive() ? "still running" : String.valueOf(error[0])));
            ok("jdbc: cancel gives " + error[0].getSQLState());

            String pid = System.getenv("DS_SERVER_PID");
            double base = rssMb(pid), peak = base;
            long n = 0, sum = 0;
            ds.setAutoCommit(false);
            try (Statement st = ds.createStatement()) {
                st.setFetchSize(10000); // a portal read 10,000 rows at a time
                try (ResultSet r = st.executeQuery("SELECT id, pad FROM big_data")) {
                    while (r.next()) {
                        n++;
                        sum += r.getLong(1);
                        if (n % 50000 == 0)
                            peak = Math.max(peak, rssMb(pid));
                    }
                }
            }
            ds.commit();
            if (n != 1000000 || sum != 1000000L * 1000001 / 2)
                fail("jdbc: the 1M-row result had " + n + " rows, ids summing to " + sum);
            if (peak - base > 300)
                fail(String.format("jdbc: duckstore grew from %.0f MB to %.0f MB while streaming", base, peak));
            ok(String.format("jdbc: 1M rows streamed, duckstore %.0f -> %.0f MB", base, peak));
        }
        System.out.println("done");
    }
}
