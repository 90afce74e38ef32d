// pgjdbc through pgfleet: server-side prepared statements (prepareThreshold), batches,
// transactions with errors, settings. Usage: java -cp postgresql.jar Check.java JDBC_URL
import java.sql.*;
import java.util.*;

public class Check {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement s = c.createStatement()) {
                s.execute("drop table if exists jdbc_t");
                s.execute("create table jdbc_t(i int primary key, v text)");
            }
            // Autocommit: every execution is its own transaction, so the server-side
            // statement (prepareThreshold=1) runs on changing server connections.
            try (PreparedStatement p = c.prepareStatement("insert into jdbc_t values (?, ?)")) {
                for (int i = 0; i < 200; i++) {
                    p.setInt(1, i);
                    p.setString(2, "v" + i);
                    check(p.executeUpdate() == 1, "insert " + i);
                }
            }
            try (PreparedStatement p = c.prepareStatement("select v from jdbc_t where i = ?")) {
                for (int i = 0; i < 200; i++) {
                    p.setInt(1, i);
                    try (ResultSet r = p.executeQuery()) {
                        check(r.next() && r.getString(1).equals("v" + i), "select " + i);
                    }
                }
            }
            // A batch in a transaction, then an error and a rollback.
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("update jdbc_t set v = ? where i = ?")) {
                for (int i = 0; i < 50; i++) {
                    p.setString(1, "b" + i);
                    p.setInt(2, i);
                    p.addBatch();
                }
                int[] counts = p.executeBatch();
                check(counts.length == 50, "batch");
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.execute("insert into jdbc_t values (1000, 'x')");
                try {
                    s.execute("select 1/0");
                    check(false, "division by zero must fail");
                } catch (SQLException e) {
                    check("22012".equals(e.getSQLState()), "22012, got " + e.getSQLState());
                }
            }
            c.rollback();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select count(*), count(*) filter (where v like 'b%') from jdbc_t")) {
                check(r.next() && r.getInt(1) == 200 && r.getInt(2) == 50, "counts after commit and rollback");
            }
            // A setting made outside a transaction sticks for this client.
            try (Statement s = c.createStatement()) {
                s.execute("SET search_path TO pg_catalog, public");
                for (int i = 0; i < 10; i++) {
                    try (ResultSet r = s.executeQuery("show search_path")) {
                        check(r.next() && r.getString(1).equals("pg_catalog, public"), "search_path");
                    }
                }
            }
        }
        System.out.println("pgjdbc: ok");
    }
}
